// One partition of a disk as a device: a window of the disk (SliceDevice) that stops serving once the table
// no longer has it, so an open file of a removed or moved partition never reaches other data.
using Fvd.Core;
using Fvd.Core.Io;

namespace Fvd.Fuse;

internal sealed class PartitionDevice(IBlockDevice disk, long start, long length, string name) : IBlockDevice
{
    private readonly SliceDevice _slice = new(disk, start, length);
    private volatile bool _gone;

    public long Start => start;
    public long Length => length;
    public bool IsReadOnly => disk.IsReadOnly;

    /// <summary>The partition table no longer has this partition: every later request fails with EIO.</summary>
    public void Retire() => _gone = true;

    public void Read(long offset, Span<byte> buffer) { Live(); _slice.Read(offset, buffer); }
    public void Write(long offset, ReadOnlySpan<byte> buffer) { Live(); _slice.Write(offset, buffer); }
    public void Flush() => disk.Flush(); // durability of writes made before a retirement is still owed
    public void Discard(long offset, long length) { Live(); _slice.Discard(offset, length); }
    public void WriteZeroes(long offset, long length) { Live(); _slice.WriteZeroes(offset, length); }
    public Extent GetExtent(long offset, long maxLength) { Live(); return _slice.GetExtent(offset, maxLength); }

    /// <summary>The disk is owned by whoever opened it.</summary>
    public void Dispose() { }

    private void Live()
    {
        if (_gone) throw new FvdException(FvdErrorKind.Io, $"{name}: the partition is no longer in the disk's partition table");
    }
}
