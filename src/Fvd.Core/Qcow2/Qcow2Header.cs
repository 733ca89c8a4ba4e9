// The qcow2 header (versions 2 and 3) and its header extensions, as qemu writes them: big-endian, in the
// first cluster of the file. Read-only: refcount fields and snapshots are parsed but never used.
//
//   off  size  field
//   0    4     magic "QFI\xfb"
//   4    4     version (2 or 3)
//   8    8     backing_file_offset (bytes; 0 = no backing)
//   16   4     backing_file_size (bytes, at most 1023)
//   20   4     cluster_bits (9 .. 21: 512 B .. 2 MiB clusters)
//   24   8     size (virtual size in bytes)
//   32   4     crypt_method (0 = none)
//   36   4     l1_size (entries)
//   40   8     l1_table_offset (bytes, cluster-aligned)
//   48   8     refcount_table_offset
//   56   4     refcount_table_clusters
//   60   4     nb_snapshots
//   64   8     snapshots_offset
//   version 3 only (version 2 headers are 72 bytes and behave as if these were zero):
//   72   8     incompatible_features (bit 0 dirty, 1 corrupt, 2 external data file, 3 compression type, 4 extended L2)
//   80   8     compatible_features (bit 0 lazy refcounts)
//   88   8     autoclear_features
//   96   4     refcount_order
//   100  4     header_length (bytes, >= 104, multiple of 8)
//   104  1     compression_type (0 = zlib/deflate, 1 = zstd; present when header_length > 104)
//
// Header extensions follow header_length (72 in version 2), up to the end of the first cluster:
// u32 type, u32 length, data padded to 8 bytes; type 0 ends the list. Only the backing-format extension
// (0xe2792aca) matters to a reader; an external data file (0x44415441) is refused by its incompatible bit.
using System.Buffers.Binary;
using System.Text;

namespace Fvd.Core.Qcow2;

public enum Qcow2Compression : byte
{
    Zlib = 0,
    Zstd = 1,
}

public sealed record Qcow2Header
{
    public const uint MagicValue = 0x514649fb; // "QFI\xfb"
    public const int MinClusterBits = 9;
    public const int MaxClusterBits = 21;
    public const int V2HeaderLength = 72;
    public const int V3MinHeaderLength = 104;
    public const int MaxBackingNameBytes = 1023;
    /// <summary>Largest active L1 table accepted (qemu's limit too): 32 MiB, 4 Mi entries.</summary>
    public const long MaxL1Bytes = 32L << 20;

    internal static class Offsets
    {
        public const int Magic = 0;
        public const int Version = 4;
        public const int BackingFileOffset = 8;
        public const int BackingFileSize = 16;
        public const int ClusterBits = 20;
        public const int Size = 24;
        public const int CryptMethod = 32;
        public const int L1Size = 36;
        public const int L1TableOffset = 40;
        public const int RefcountTableOffset = 48;
        public const int RefcountTableClusters = 56;
        public const int SnapshotCount = 60;
        public const int SnapshotsOffset = 64;
        public const int Incompatible = 72;
        public const int Compatible = 80;
        public const int Autoclear = 88;
        public const int RefcountOrder = 96;
        public const int HeaderLength = 100;
        public const int CompressionType = 104;
    }

    [Flags]
    public enum IncompatibleBits : ulong
    {
        Dirty = 1 << 0,
        Corrupt = 1 << 1,
        ExternalDataFile = 1 << 2,
        CompressionType = 1 << 3,
        ExtendedL2 = 1 << 4,
    }

    /// <summary>Incompatible features this reader handles (dirty and corrupt only concern refcounts and writers).</summary>
    public const IncompatibleBits Supported = IncompatibleBits.Dirty | IncompatibleBits.Corrupt
        | IncompatibleBits.CompressionType | IncompatibleBits.ExtendedL2;

    internal static class ExtensionTypes
    {
        public const uint End = 0;
        public const uint BackingFormat = 0xe2792aca;
        public const uint FeatureNames = 0x6803f857;
        public const uint ExternalDataFile = 0x44415441;
    }

    public uint Version { get; init; }
    public ulong BackingFileOffset { get; init; }
    public uint BackingFileSize { get; init; }
    public uint ClusterBits { get; init; }
    public ulong Size { get; init; }
    public uint CryptMethod { get; init; }
    public uint L1Size { get; init; }
    public ulong L1TableOffset { get; init; }
    public IncompatibleBits Incompatible { get; init; }
    public ulong Compatible { get; init; }
    public ulong Autoclear { get; init; }
    public uint RefcountOrder { get; init; }
    public uint HeaderLength { get; init; }
    public byte CompressionTypeByte { get; init; }
    /// <summary>The backing file name, decoded; null without a backing.</summary>
    public string? BackingFile { get; init; }
    /// <summary>The backing-format extension's value ("raw", "qcow2"), null when the image records none.</summary>
    public string? BackingFormat { get; init; }

    public int ClusterSize => 1 << (int)ClusterBits;
    public bool ExtendedL2 => (Incompatible & IncompatibleBits.ExtendedL2) != 0;
    public Qcow2Compression Compression => (Qcow2Compression)CompressionTypeByte;
    /// <summary>Bytes per L2 entry: 8, or 16 with extended L2 (entry plus subcluster bitmap).</summary>
    public int L2EntryBytes => ExtendedL2 ? 16 : 8;
    public long L2Entries => ClusterSize / L2EntryBytes;

    /// <summary>True when the bytes start with the qcow2 magic.</summary>
    public static bool HasMagic(ReadOnlySpan<byte> src) =>
        src.Length >= 4 && BinaryPrimitives.ReadUInt32BigEndian(src) == MagicValue;

    /// <summary>
    /// Parses the first cluster of the file (or as much of it as exists, at least the fixed header).
    /// Checks only what decoding needs (magic, version, lengths that locate the extensions and the backing
    /// name inside src); <see cref="Validate"/> checks the values.
    /// </summary>
    public static Qcow2Header Parse(ReadOnlySpan<byte> src, string? path = null)
    {
        if (src.Length < V2HeaderLength) throw Bad(path, $"file too short for a qcow2 header ({src.Length} bytes)");
        if (!HasMagic(src)) throw Bad(path, "not a qcow2 image (bad magic)");
        uint version = BinaryPrimitives.ReadUInt32BigEndian(src[Offsets.Version..]);
        if (version is not (2 or 3))
            throw new FvdException(FvdErrorKind.UnsupportedFeature, $"qcow2 version {version} is not supported (2 and 3 are)", path);
        uint clusterBits = BinaryPrimitives.ReadUInt32BigEndian(src[Offsets.ClusterBits..]);
        // Needed before anything else: extensions and the backing name must lie inside the first cluster.
        if (clusterBits < MinClusterBits || clusterBits > MaxClusterBits)
            throw Bad(path, $"cluster_bits {clusterBits} is outside {MinClusterBits}..{MaxClusterBits}");
        int firstCluster = Math.Min(src.Length, 1 << (int)clusterBits);
        src = src[..firstCluster];

        ulong incompat = 0, compat = 0, autoclear = 0;
        uint refcountOrder = 4, headerLength = V2HeaderLength;
        byte compression = 0;
        if (version == 3)
        {
            if (src.Length < V3MinHeaderLength) throw Bad(path, $"file too short for a qcow2 v3 header ({src.Length} bytes)");
            incompat = BinaryPrimitives.ReadUInt64BigEndian(src[Offsets.Incompatible..]);
            compat = BinaryPrimitives.ReadUInt64BigEndian(src[Offsets.Compatible..]);
            autoclear = BinaryPrimitives.ReadUInt64BigEndian(src[Offsets.Autoclear..]);
            refcountOrder = BinaryPrimitives.ReadUInt32BigEndian(src[Offsets.RefcountOrder..]);
            headerLength = BinaryPrimitives.ReadUInt32BigEndian(src[Offsets.HeaderLength..]);
            if (headerLength < V3MinHeaderLength || headerLength % 8 != 0 || headerLength > src.Length)
                throw Bad(path, $"header_length {headerLength} is not a multiple of 8 between {V3MinHeaderLength} and the first cluster's {src.Length} bytes");
            if (headerLength > Offsets.CompressionType) compression = src[Offsets.CompressionType];
        }

        ulong backingOffset = BinaryPrimitives.ReadUInt64BigEndian(src[Offsets.BackingFileOffset..]);
        uint backingSize = BinaryPrimitives.ReadUInt32BigEndian(src[Offsets.BackingFileSize..]);
        string? backingFile = null;
        if (backingOffset != 0)
        {
            if (backingSize == 0 || backingSize > MaxBackingNameBytes)
                throw Bad(path, $"backing_file_size {backingSize} is not between 1 and {MaxBackingNameBytes}");
            if (backingOffset < headerLength || backingOffset > (ulong)src.Length || backingSize > (ulong)src.Length - backingOffset)
                throw Bad(path, $"backing file name [{backingOffset}, +{backingSize}) is not inside the first cluster after the header");
            backingFile = Utf8(src.Slice((int)backingOffset, (int)backingSize), "backing file name", path);
        }

        string? backingFormat = ReadExtensions(src, (int)headerLength, path);
        return new Qcow2Header
        {
            Version = version,
            BackingFileOffset = backingOffset,
            BackingFileSize = backingSize,
            ClusterBits = clusterBits,
            Size = BinaryPrimitives.ReadUInt64BigEndian(src[Offsets.Size..]),
            CryptMethod = BinaryPrimitives.ReadUInt32BigEndian(src[Offsets.CryptMethod..]),
            L1Size = BinaryPrimitives.ReadUInt32BigEndian(src[Offsets.L1Size..]),
            L1TableOffset = BinaryPrimitives.ReadUInt64BigEndian(src[Offsets.L1TableOffset..]),
            Incompatible = (IncompatibleBits)incompat,
            Compatible = compat,
            Autoclear = autoclear,
            RefcountOrder = refcountOrder,
            HeaderLength = headerLength,
            CompressionTypeByte = compression,
            BackingFile = backingFile,
            BackingFormat = backingFormat,
        };
    }

    /// <summary>Walks the extension list; returns the backing format, if recorded.</summary>
    private static string? ReadExtensions(ReadOnlySpan<byte> cluster, int start, string? path)
    {
        string? backingFormat = null;
        int pos = start;
        while (pos + 8 <= cluster.Length)
        {
            uint type = BinaryPrimitives.ReadUInt32BigEndian(cluster[pos..]);
            uint len = BinaryPrimitives.ReadUInt32BigEndian(cluster[(pos + 4)..]);
            if (type == ExtensionTypes.End) break;
            pos += 8;
            if (len > (uint)(cluster.Length - pos))
                throw Bad(path, $"header extension 0x{type:x8} of {len} bytes runs past the first cluster");
            if (type == ExtensionTypes.BackingFormat)
                backingFormat = Utf8(cluster.Slice(pos, (int)len), "backing format", path);
            // Unknown extensions are skipped, as the specification allows.
            pos += (int)Math.Min((len + 7u) & ~7u, (uint)(cluster.Length - pos));
        }
        return backingFormat;
    }

    private static string Utf8(ReadOnlySpan<byte> b, string what, string? path)
    {
        if (b.IndexOf((byte)0) >= 0) throw Bad(path, $"{what} contains a NUL byte");
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(b);
        }
        catch (ArgumentException)
        {
            throw Bad(path, $"{what} is not valid UTF-8");
        }
    }

    /// <summary>
    /// Checks every value as hostile input against the file's length. Throws FvdException: UnsupportedFeature
    /// for what this reader does not do (encryption, external data file, unknown incompatible bits),
    /// InvalidFormat for values that are wrong.
    /// </summary>
    public void Validate(long fileLength, string? path = null)
    {
        if (CryptMethod != 0)
            throw new FvdException(FvdErrorKind.UnsupportedFeature, $"encrypted qcow2 images are not supported (crypt_method {CryptMethod})", path);
        if ((Incompatible & IncompatibleBits.ExternalDataFile) != 0)
            throw new FvdException(FvdErrorKind.UnsupportedFeature, "qcow2 images with an external data file are not supported", path);
        var unknown = Incompatible & ~Supported;
        if (unknown != 0)
            throw new FvdException(FvdErrorKind.UnsupportedFeature, $"qcow2 image uses unknown incompatible features 0x{(ulong)unknown:x}", path);
        if ((Incompatible & IncompatibleBits.CompressionType) == 0 && CompressionTypeByte != 0)
            throw Bad(path, $"compression_type {CompressionTypeByte} set without the compression-type feature bit");
        if (CompressionTypeByte > (byte)Qcow2Compression.Zstd)
            throw new FvdException(FvdErrorKind.UnsupportedFeature, $"qcow2 compression type {CompressionTypeByte} is not supported (zlib and zstd are)", path);
        // 32 subclusters of at least 512 bytes each.
        if (ExtendedL2 && ClusterBits < 14)
            throw Bad(path, $"extended L2 entries need clusters of at least 16 KiB, not {ClusterSize} bytes");
        if (Size == 0 || Size > long.MaxValue / 2)
            throw Bad(path, $"virtual size {Size} is out of range");
        ulong clusters = (Size + (ulong)ClusterSize - 1) >> (int)ClusterBits;
        ulong needL1 = (clusters + (ulong)L2Entries - 1) / (ulong)L2Entries;
        if ((ulong)L1Size * 8 > MaxL1Bytes)
            throw Bad(path, $"L1 table of {L1Size} entries exceeds the {MaxL1Bytes}-byte limit");
        if (L1Size < needL1)
            throw Bad(path, $"L1 table of {L1Size} entries is too small for a {Size}-byte disk ({needL1} needed)");
        if (L1Size > 0)
        {
            if (L1TableOffset % (ulong)ClusterSize != 0 || L1TableOffset == 0)
                throw Bad(path, $"L1 table offset {L1TableOffset} is not a non-zero multiple of the cluster size");
            if (L1TableOffset > (ulong)fileLength || (ulong)L1Size * 8 > (ulong)fileLength - L1TableOffset)
                throw Bad(path, $"L1 table [{L1TableOffset}, +{(ulong)L1Size * 8}) lies outside the {fileLength}-byte file");
        }
        if (BackingFile is not null)
        {
            if (BackingFile.Length == 0) throw Bad(path, "empty backing file name");
            if (Format.FvdHeader.LooksLikeProtocol(BackingFile))
                throw Bad(path, $"backing file '{BackingFile}' looks like a protocol prefix; only plain paths and http(s) URLs are accepted");
        }
        // refcount_order, refcount table and snapshots are not read by a read-only reader: not checked.
    }

    private static FvdException Bad(string? path, string message) => new(FvdErrorKind.InvalidFormat, message, path);
}
