// One L1 table entry (u64, big-endian): bits 9..55 = offset of an L2 table (cluster-aligned; 0 = the
// whole range the L2 table would cover is unallocated), bit 63 = "copied" (refcount 1, ignored when
// reading), other bits reserved.
using System.Buffers.Binary;

namespace Fvd.Core.Qcow2;

public readonly record struct Qcow2L1Entry(ulong Raw)
{
    public const int Bytes = 8;
    private const ulong OffsetMask = 0x00ff_ffff_ffff_fe00;

    public static Qcow2L1Entry Read(ReadOnlySpan<byte> table, long index) =>
        new(BinaryPrimitives.ReadUInt64BigEndian(table[(int)(index * Bytes)..]));

    public long L2Offset => (long)(Raw & OffsetMask);

    /// <summary>Checks the L2 table lies, cluster-aligned and whole, inside the file.</summary>
    public void Validate(int clusterSize, long fileLength, long index, string? path)
    {
        long off = L2Offset;
        if (off == 0) return;
        if (off % clusterSize != 0)
            throw Qcow2L2Entry.Corrupt(path, $"L1 entry {index}: L2 table offset {off} is not cluster-aligned");
        if (off > fileLength - clusterSize)
            throw Qcow2L2Entry.Corrupt(path, $"L1 entry {index}: L2 table at {off} lies outside the {fileLength}-byte file");
    }
}
