// The compressed cluster descriptor: bits 0..61 of a compressed L2 entry. With x = 62 - (cluster_bits - 8):
//   bits 0 .. x-1   host offset of the compressed data (any byte offset)
//   bits x .. 61    number of additional 512-byte sectors used, beyond the sector holding the offset
// So the data spans (sectors + 1) * 512 - (offset % 512) bytes at most; the end may pass EOF (qemu does not
// pad the last compressed cluster), those bytes are simply not there.
namespace Fvd.Core.Qcow2;

public readonly record struct Qcow2CompressedDescriptor(ulong Raw, int ClusterBits)
{
    private int SizeShift => 62 - (ClusterBits - 8);

    public long HostOffset => (long)(Raw & ((1UL << SizeShift) - 1));

    /// <summary>Upper bound of the compressed data's length in bytes.</summary>
    public int MaxLength
    {
        get
        {
            long sectors = (long)((Raw >> SizeShift) & ((1UL << (ClusterBits - 8)) - 1)) + 1;
            return (int)(sectors * 512 - (HostOffset & 511));
        }
    }

    /// <summary>Bytes to read: the descriptor's range cut at the end of the file.</summary>
    public int LengthIn(long fileLength) => (int)Math.Min(MaxLength, fileLength - HostOffset);

    public void Validate(long fileLength, string? path)
    {
        if (HostOffset < 1L << ClusterBits || HostOffset >= fileLength)
            throw Qcow2L2Entry.Corrupt(path, $"compressed cluster at {HostOffset} lies outside the {fileLength}-byte file");
    }
}
