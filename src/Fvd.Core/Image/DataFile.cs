// The data file as the driver writes it: every write, discard and zeroing goes where the block map places
// it (Mapping/IBlockMap.cs) and is reported to the metadata file, so the next flush syncs the data before
// any metadata that names it (MetadataFile.cs).
using Fvd.Core.Image.Mapping;
using Fvd.Core.Io;

namespace Fvd.Core.Image;

internal sealed class DataFile(IBlockDevice device, IBlockMap map, MetadataFile metadata) : IDisposable
{
    private enum Op { Write, Discard, Zero }

    /// <summary>The device (replaced only by tests, right after open).</summary>
    public IBlockDevice Device { get; private set; } = device;

    internal void WrapForTests(Func<IBlockDevice, IBlockDevice> wrap) => Device = wrap(Device);

    /// <summary>Reads at a data offset the map returned.</summary>
    public void Read(long dataOffset, Span<byte> dst) => Device.Read(dataOffset, dst);

    /// <summary>Allocation at a data offset the map returned (fvd-img map, SEEK_DATA/SEEK_HOLE).</summary>
    public Extent GetExtent(long dataOffset, long maxLength) => Device.GetExtent(dataOffset, maxLength);

    /// <summary>Writes src at virtual offset; the caller marks the blocks local afterwards.</summary>
    public void Write(long offset, ReadOnlySpan<byte> src) => Apply(Op.Write, offset, src.Length, src);

    public void Discard(long offset, long length) => Apply(Op.Discard, offset, length, default);

    public void WriteZeroes(long offset, long length) => Apply(Op.Zero, offset, length, default);

    private void Apply(Op op, long offset, long length, ReadOnlySpan<byte> src)
    {
        for (long done = 0; done < length;)
        {
            long at = map.PrepareWrite(offset + done, length - done, out long n);
            switch (op)
            {
                case Op.Write: Device.Write(at, src.Slice((int)done, (int)n)); break;
                case Op.Discard: Device.Discard(at, n); break;
                default: Device.WriteZeroes(at, n); break;
            }
            done += n;
        }
        metadata.MarkDataWritten();
    }

    public void Dispose() => Device.Dispose();
}
