// One L2 table entry (big-endian), standard (u64) or extended (u64 entry + u64 subcluster bitmap).
//
//   bit 63      copied (refcount 1; ignored when reading)
//   bit 62      compressed: bits 0..61 are a compressed cluster descriptor (Qcow2CompressedDescriptor)
//   standard cluster:
//   bits 9..55  host cluster offset (cluster-aligned; 0 = unallocated)
//   bit 0       reads as zeros (version 3; reserved with extended L2, where the bitmap says it per subcluster)
//   extended L2 bitmap (32 subclusters of cluster_size / 32 bytes):
//   bits 0..31  subcluster x is allocated at host offset + x * subcluster size
//   bits 32..63 subcluster x reads as zeros (both bits set is corrupt; neither = unallocated)
using System.Buffers.Binary;

namespace Fvd.Core.Qcow2;

/// <summary>Where a (sub)cluster's bytes come from.</summary>
public enum Qcow2ClusterKind
{
    /// <summary>Not in this file: the backing file, or zeros without one.</summary>
    Unallocated,
    /// <summary>Reads as zeros.</summary>
    Zero,
    /// <summary>Uncompressed data at a host offset.</summary>
    Data,
    /// <summary>A compressed cluster.</summary>
    Compressed,
}

public readonly record struct Qcow2L2Entry(ulong Raw, ulong Bitmap)
{
    public const int Subclusters = 32;
    private const ulong CompressedBit = 1UL << 62;
    private const ulong ZeroBit = 1;
    private const ulong OffsetMask = 0x00ff_ffff_ffff_fe00;

    public static Qcow2L2Entry Read(ReadOnlySpan<byte> table, long index, bool extended)
    {
        int at = (int)(index * (extended ? 16 : 8));
        ulong raw = BinaryPrimitives.ReadUInt64BigEndian(table[at..]);
        return new(raw, extended ? BinaryPrimitives.ReadUInt64BigEndian(table[(at + 8)..]) : 0);
    }

    public bool IsCompressed => (Raw & CompressedBit) != 0;
    public long HostOffset => (long)(Raw & OffsetMask);

    /// <summary>The cluster's descriptor; only for a compressed entry.</summary>
    public Qcow2CompressedDescriptor Compressed(int clusterBits) => new(Raw, clusterBits);

    /// <summary>
    /// Classifies the (sub)cluster at byte inCluster of this entry's cluster and says how many bytes from
    /// there share that classification (to the end of the subcluster run or the cluster).
    /// Checks the entry against the file first: host offsets cluster-aligned and inside the file.
    /// </summary>
    public Qcow2ClusterKind Classify(int inCluster, int clusterBits, bool extended, long fileLength, string? path, out int runBytes)
    {
        int clusterSize = 1 << clusterBits;
        runBytes = clusterSize - inCluster;
        if (IsCompressed)
        {
            if (extended && Bitmap != 0) throw Qcow2L2Entry.Corrupt(path, "compressed cluster with a non-zero subcluster bitmap");
            Compressed(clusterBits).Validate(fileLength, path);
            return Qcow2ClusterKind.Compressed;
        }
        long host = HostOffset;
        if (host != 0)
        {
            if (host % clusterSize != 0) throw Corrupt(path, $"L2 entry: data cluster offset {host} is not cluster-aligned");
            // Bytes of the last cluster past EOF read as zeros (as qemu reads them), but the cluster must start inside the file.
            if (host >= fileLength) throw Corrupt(path, $"L2 entry: data cluster at {host} lies outside the {fileLength}-byte file");
        }
        if (!extended)
        {
            if ((Raw & ZeroBit) != 0) return Qcow2ClusterKind.Zero;
            return host == 0 ? Qcow2ClusterKind.Unallocated : Qcow2ClusterKind.Data;
        }

        uint alloc = (uint)Bitmap, zero = (uint)(Bitmap >> 32);
        if ((alloc & zero) != 0) throw Corrupt(path, "L2 entry: a subcluster is both allocated and zero");
        if (host == 0 && alloc != 0) throw Corrupt(path, "L2 entry: allocated subclusters in an unallocated cluster");
        int scBits = clusterBits - 5;
        int sc = inCluster >> scBits;
        var kind = KindOf(alloc, zero, sc);
        int end = sc + 1;
        while (end < Subclusters && KindOf(alloc, zero, end) == kind) end++;
        runBytes = (end << scBits) - inCluster;
        return kind;
    }

    private static Qcow2ClusterKind KindOf(uint alloc, uint zero, int sc) =>
        (alloc >> sc & 1) != 0 ? Qcow2ClusterKind.Data
        : (zero >> sc & 1) != 0 ? Qcow2ClusterKind.Zero
        : Qcow2ClusterKind.Unallocated;

    internal static FvdException Corrupt(string? path, string message) => new(FvdErrorKind.CorruptImage, message, path);
}
