// The FVD v1 header: the first 4096 bytes of NAME.fvd, little-endian. man/fvd.5 documents every field.
//
//   off  size  field
//   0    8     magic "FVDIMG\r\n"
//   8    4     version (1)
//   12   4     header_size (4096)
//   16   4     header_crc32c (CRC-32C of the 4096 bytes with this field zero)
//   20   4     flags (HeaderFlags)
//   24   8     incompatible_features
//   32   8     compatible_features
//   40   8     autoclear_features
//   48   8     virtual_size (bytes, multiple of 512)
//   56   4     block_size (bytes, power of two, 512 B .. 16 MiB)
//   60   4     reserved (0)
//   64   8     backing_size (bytes covered by the bitmap; 0 = no backing)
//   72   8     bitmap_offset (bytes into NAME.fvd, multiple of 4096)
//   80   8     bitmap_length (bytes = ceil(ceil(backing_size / block_size) / 8))
//   88   8     data_offset (bytes into NAME.fvd where data starts when InlineData; else 0)
//   96   4     prefetch_start_delay (seconds; -1 = never)
//   100  4     prefetch_chunk (bytes per prefetch read; multiple of block_size, 0 = default)
//   104  4     prefetch_min_read (KiB/s; below it prefetch backs off)
//   108  4     prefetch_max_read (KiB/s; 0 = no upper limit)
//   112  4     prefetch_min_write (KiB/s)
//   116  4     prefetch_max_write (KiB/s; 0 = no upper limit)
//   120  4     prefetch_throttle (ms; longest random back-off)
//   124  4     max_outstanding_cor (bytes of copy-on-read saves in flight)
//   128  16    table_offset, table_length        (reserved for the compact table; 0)
//   144  16    journal_offset, journal_length    (reserved for the journal; 0)
//   160  16    snapshot_offset, snapshot_length  (reserved for the snapshot table; 0)
//   176  16    profile_offset, profile_length    (reserved for the prefetch profile; 0)
//   192  16    hashes_offset, hashes_length      (reserved for backing-content hashes; 0)
//   208  8     generation (two header slots only: the copy with the larger value is current; else 0)
//   216  296   reserved (0)
//   512  16    backing_format (ASCII, NUL padded: "raw")
//   528  496   reserved (0)
//   1024 1024  backing_path (UTF-8, NUL padded; relative paths resolve against the image's directory)
//   2048 1024  data_file (UTF-8, NUL padded; relative to the image's directory; empty when InlineData)
//   3072 1024  reserved (0)
//
// Images with the TwoHeaderSlots incompatible feature keep a second copy of the header at offset 4096
// (HeaderSlots.cs); the bitmap then starts at 8192.
using System.Buffers.Binary;
using System.Text;

namespace Fvd.Core.Format;

public sealed record FvdHeader
{
    public const int Size = 4096;
    public const uint CurrentVersion = 1;
    public const int MaxPathBytes = 1023;
    public const int MinBlockSize = 512;
    public const int MaxBlockSize = 16 << 20;
    /// <summary>Largest virtual disk accepted: 64 TiB (docs/architecture.md §5).</summary>
    public const long MaxVirtualSize = 64L << 40;
    /// <summary>Largest bitmap loaded into memory; refused before allocating (docs/architecture.md §5).</summary>
    public const long MaxBitmapBytes = 256L << 20;

    public static ReadOnlySpan<byte> Magic => "FVDIMG\r\n"u8;

    /// <summary>The backing_format values a reader accepts.</summary>
    public static readonly string[] BackingFormats = ["raw", "qcow2", "fvd"];

    internal static class Offsets
    {
        public const int Magic = 0;
        public const int Version = 8;
        public const int HeaderSize = 12;
        public const int Crc = 16;
        public const int Flags = 20;
        public const int Incompatible = 24;
        public const int Compatible = 32;
        public const int Autoclear = 40;
        public const int VirtualSize = 48;
        public const int BlockSize = 56;
        public const int Reserved60 = 60;
        public const int BackingSize = 64;
        public const int BitmapOffset = 72;
        public const int BitmapLength = 80;
        public const int DataOffset = 88;
        public const int PrefetchStartDelay = 96;
        public const int PrefetchChunk = 100;
        public const int PrefetchMinRead = 104;
        public const int PrefetchMaxRead = 108;
        public const int PrefetchMinWrite = 112;
        public const int PrefetchMaxWrite = 116;
        public const int PrefetchThrottle = 120;
        public const int MaxOutstandingCor = 124;
        public const int Regions = 128; // five (offset, length) pairs of u64
        public const int RegionsEnd = 208;
        public const int Generation = 208;
        public const int BackingFormat = 512;
        public const int BackingFormatLength = 16;
        public const int BackingPath = 1024;
        public const int DataFile = 2048;
        public const int PathField = 1024;
    }

    public uint Version { get; init; } = CurrentVersion;
    public HeaderFlags Flags { get; init; }
    public IncompatibleFeatures Incompatible { get; init; }
    public CompatibleFeatures Compatible { get; init; }
    public AutoclearFeatures Autoclear { get; init; }
    public long VirtualSize { get; init; }
    public int BlockSize { get; init; }
    public long BackingSize { get; init; }
    public long BitmapOffset { get; init; }
    public long BitmapLength { get; init; }
    public long DataOffset { get; init; }
    public PrefetchSettings Prefetch { get; init; } = PrefetchSettings.Default;
    public string BackingFormat { get; init; } = "";
    public string BackingPath { get; init; } = "";
    public string DataFile { get; init; } = "";
    /// <summary>Which header copy is current (two slots only; 0 in single-slot images). See HeaderSlots.</summary>
    public long Generation { get; init; }
    /// <summary>Reserved regions for later features, as (offset, length); all zero in v1.</summary>
    public (long Offset, long Length)[] ReservedRegions { get; init; } = new (long, long)[5];

    /// <summary>Index of the prefetch-profile region in ReservedRegions (header bytes 176..191).</summary>
    public const int ProfileRegion = 3;

    public bool HasBacking => BackingSize > 0;
    public bool InlineData => (Incompatible & IncompatibleFeatures.InlineData) != 0;
    public bool TwoSlots => (Incompatible & IncompatibleFeatures.TwoHeaderSlots) != 0;
    /// <summary>Bytes at the start of NAME.fvd that hold header copies: 4096, or 8192 with two slots.</summary>
    public long HeaderArea => TwoSlots ? HeaderSlots.Count * (long)Size : Size;
    public long BitmapBlocks => HasBacking ? CeilDiv(BackingSize, BlockSize) : 0;

    public static long CeilDiv(long a, long b) => (a + b - 1) / b;
    public static long AlignUp(long v, long a) => checked((v + a - 1) / a * a);

    /// <summary>Serializes to exactly 4096 bytes, CRC included.</summary>
    public void WriteTo(Span<byte> dst)
    {
        if (dst.Length < Size) throw new ArgumentException("header buffer too small", nameof(dst));
        dst = dst[..Size];
        dst.Clear();
        Magic.CopyTo(dst);
        BinaryPrimitives.WriteUInt32LittleEndian(dst[Offsets.Version..], Version);
        BinaryPrimitives.WriteUInt32LittleEndian(dst[Offsets.HeaderSize..], Size);
        BinaryPrimitives.WriteUInt32LittleEndian(dst[Offsets.Flags..], (uint)Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[Offsets.Incompatible..], (ulong)Incompatible);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[Offsets.Compatible..], (ulong)Compatible);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[Offsets.Autoclear..], (ulong)Autoclear);
        BinaryPrimitives.WriteInt64LittleEndian(dst[Offsets.VirtualSize..], VirtualSize);
        BinaryPrimitives.WriteInt32LittleEndian(dst[Offsets.BlockSize..], BlockSize);
        BinaryPrimitives.WriteInt64LittleEndian(dst[Offsets.BackingSize..], BackingSize);
        BinaryPrimitives.WriteInt64LittleEndian(dst[Offsets.BitmapOffset..], BitmapOffset);
        BinaryPrimitives.WriteInt64LittleEndian(dst[Offsets.BitmapLength..], BitmapLength);
        BinaryPrimitives.WriteInt64LittleEndian(dst[Offsets.DataOffset..], DataOffset);
        Prefetch.WriteTo(dst[Offsets.PrefetchStartDelay..Offsets.Regions]);
        BinaryPrimitives.WriteInt64LittleEndian(dst[Offsets.Generation..], Generation);
        for (int i = 0; i < 5; i++)
        {
            BinaryPrimitives.WriteInt64LittleEndian(dst[(Offsets.Regions + 16 * i)..], ReservedRegions[i].Offset);
            BinaryPrimitives.WriteInt64LittleEndian(dst[(Offsets.Regions + 16 * i + 8)..], ReservedRegions[i].Length);
        }
        WriteString(dst.Slice(Offsets.BackingFormat, Offsets.BackingFormatLength), BackingFormat, "backing format");
        WriteString(dst.Slice(Offsets.BackingPath, Offsets.PathField), BackingPath, "backing path");
        WriteString(dst.Slice(Offsets.DataFile, Offsets.PathField), DataFile, "data file name");
        BinaryPrimitives.WriteUInt32LittleEndian(dst[Offsets.Crc..], Crc32C.Compute(dst));
    }

    public byte[] ToBytes()
    {
        var b = new byte[Size];
        WriteTo(b);
        return b;
    }

    private static void WriteString(Span<byte> field, string value, string what)
    {
        int n = Encoding.UTF8.GetByteCount(value);
        if (n >= field.Length)
            throw new FvdException(FvdErrorKind.InvalidArgument, $"{what} is {n} bytes; at most {field.Length - 1} fit");
        Encoding.UTF8.GetBytes(value, field);
    }

    /// <summary>
    /// Parses the bytes of a header. Checks only what is needed to decode it (magic, version, size, CRC,
    /// string encoding); <see cref="Validate"/> checks the values.
    /// </summary>
    public static FvdHeader Parse(ReadOnlySpan<byte> src, string? path = null)
    {
        if (src.Length < Size)
            throw Bad(path, $"file too short for an FVD header ({src.Length} of {Size} bytes)");
        src = src[..Size];
        if (!src[..Magic.Length].SequenceEqual(Magic)) throw Bad(path, "not an FVD image (bad magic)");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(src[Offsets.Version..]);
        if (version != CurrentVersion)
            throw new FvdException(FvdErrorKind.UnsupportedFeature, $"FVD version {version} is not supported (this build reads version {CurrentVersion})", path);
        uint hsize = BinaryPrimitives.ReadUInt32LittleEndian(src[Offsets.HeaderSize..]);
        if (hsize != Size) throw Bad(path, $"header size {hsize} is not {Size}");
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(src[Offsets.Crc..]);
        Span<byte> copy = stackalloc byte[Size];
        src.CopyTo(copy);
        BinaryPrimitives.WriteUInt32LittleEndian(copy[Offsets.Crc..], 0);
        uint actual = Crc32C.Compute(copy);
        if (stored != actual) throw Bad(path, $"header checksum mismatch (stored 0x{stored:x8}, computed 0x{actual:x8})");

        var regions = new (long, long)[5];
        for (int i = 0; i < 5; i++)
            regions[i] = (BinaryPrimitives.ReadInt64LittleEndian(src[(Offsets.Regions + 16 * i)..]),
                          BinaryPrimitives.ReadInt64LittleEndian(src[(Offsets.Regions + 16 * i + 8)..]));
        return new FvdHeader
        {
            Version = version,
            Flags = (HeaderFlags)BinaryPrimitives.ReadUInt32LittleEndian(src[Offsets.Flags..]),
            Incompatible = (IncompatibleFeatures)BinaryPrimitives.ReadUInt64LittleEndian(src[Offsets.Incompatible..]),
            Compatible = (CompatibleFeatures)BinaryPrimitives.ReadUInt64LittleEndian(src[Offsets.Compatible..]),
            Autoclear = (AutoclearFeatures)BinaryPrimitives.ReadUInt64LittleEndian(src[Offsets.Autoclear..]),
            VirtualSize = BinaryPrimitives.ReadInt64LittleEndian(src[Offsets.VirtualSize..]),
            BlockSize = BinaryPrimitives.ReadInt32LittleEndian(src[Offsets.BlockSize..]),
            BackingSize = BinaryPrimitives.ReadInt64LittleEndian(src[Offsets.BackingSize..]),
            BitmapOffset = BinaryPrimitives.ReadInt64LittleEndian(src[Offsets.BitmapOffset..]),
            BitmapLength = BinaryPrimitives.ReadInt64LittleEndian(src[Offsets.BitmapLength..]),
            DataOffset = BinaryPrimitives.ReadInt64LittleEndian(src[Offsets.DataOffset..]),
            Prefetch = PrefetchSettings.Read(src[Offsets.PrefetchStartDelay..Offsets.Regions]),
            Generation = BinaryPrimitives.ReadInt64LittleEndian(src[Offsets.Generation..]),
            ReservedRegions = regions,
            BackingFormat = ReadString(src.Slice(Offsets.BackingFormat, Offsets.BackingFormatLength), "backing format", path),
            BackingPath = ReadString(src.Slice(Offsets.BackingPath, Offsets.PathField), "backing path", path),
            DataFile = ReadString(src.Slice(Offsets.DataFile, Offsets.PathField), "data file name", path),
        };
    }

    private static string ReadString(ReadOnlySpan<byte> field, string what, string? path)
    {
        int end = field.IndexOf((byte)0);
        if (end < 0) throw Bad(path, $"{what} is not NUL-terminated");
        if (field[end..].IndexOfAnyExcept((byte)0) >= 0) throw Bad(path, $"{what} has bytes after its terminator");
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(field[..end]);
        }
        catch (ArgumentException)
        {
            throw Bad(path, $"{what} is not valid UTF-8");
        }
    }

    /// <summary>
    /// Checks every value as hostile input (docs/architecture.md §5). metadataLength is the size of NAME.fvd.
    /// Throws FvdException with a message naming the field.
    /// </summary>
    public void Validate(long metadataLength, string? path = null)
    {
        var unknownIncompat = Incompatible & ~KnownFeatures.Incompatible;
        if (unknownIncompat != 0)
            throw new FvdException(FvdErrorKind.UnsupportedFeature,
                $"image uses unsupported incompatible features 0x{(ulong)unknownIncompat:x} ({DescribeIncompatible(unknownIncompat)})", path);
        if ((Flags & ~KnownFeatures.Flags) != 0) throw Bad(path, $"unknown header flags 0x{(uint)(Flags & ~KnownFeatures.Flags):x}");
        if (BlockSize < MinBlockSize || BlockSize > MaxBlockSize || (BlockSize & (BlockSize - 1)) != 0)
            throw Bad(path, $"block size {BlockSize} is not a power of two between {MinBlockSize} and {MaxBlockSize}");
        if (VirtualSize <= 0 || VirtualSize % 512 != 0 || VirtualSize > MaxVirtualSize)
            throw Bad(path, $"virtual size {VirtualSize} is not a positive multiple of 512 up to {MaxVirtualSize}");
        if (BackingSize < 0 || BackingSize > MaxVirtualSize)
            throw Bad(path, $"backing size {BackingSize} is out of range");
        // The bitmap covers min(backing, disk); a larger value would leave blocks past the disk that prefetch
        // can never fetch.
        if (BackingSize > VirtualSize)
            throw Bad(path, $"backing size {BackingSize} exceeds the virtual size {VirtualSize}");
        // A generation at the top of the range could wrap on the next update and make a stale copy current.
        if (Generation < 0 || Generation == long.MaxValue || (!TwoSlots && Generation != 0))
            throw Bad(path, $"header generation {Generation} is out of range{(TwoSlots ? "" : " for a single-slot header")}");
        if (TwoSlots && metadataLength < HeaderArea)
            throw Bad(path, $"file too short for two header copies ({metadataLength} of {HeaderArea} bytes)");
        if (BackingSize > 0 && BackingFormat.Length == 0) throw Bad(path, "backing size set but no backing format");
        if (BackingSize > 0 && BackingPath.Length == 0) throw Bad(path, "backing size set but no backing path");
        if (BackingSize == 0 && (BackingPath.Length != 0 || BitmapLength != 0))
            throw Bad(path, "backing path or bitmap present but backing size is 0");
        if (BackingFormat.Length > 0 && !BackingFormats.Contains(BackingFormat))
            throw new FvdException(FvdErrorKind.UnsupportedFeature, $"backing format '{BackingFormat}' is not supported (raw, qcow2 or fvd)", path);
        if (LooksLikeProtocol(BackingPath))
            throw Bad(path, $"backing path '{BackingPath}' looks like a protocol prefix; only plain paths are accepted");
        long expectBitmap = CeilDiv(BitmapBlocks, 8);
        if (BitmapLength != expectBitmap) throw Bad(path, $"bitmap length {BitmapLength} does not match {expectBitmap} derived from backing size and block size");
        if (BitmapLength > MaxBitmapBytes) throw Bad(path, $"bitmap of {BitmapLength} bytes exceeds the {MaxBitmapBytes}-byte limit");
        if (BitmapOffset != HeaderArea && !(BitmapLength == 0 && BitmapOffset == 0))
            throw Bad(path, $"bitmap offset {BitmapOffset} is not {HeaderArea}");
        long bitmapEnd = MetadataRegions.EndOfBitmap(HeaderArea, BitmapLength); // BitmapOffset == HeaderArea, checked above
        if (BitmapLength > 0 && BitmapOffset + BitmapLength > metadataLength)
            throw Bad(path, $"bitmap [{BitmapOffset}, +{BitmapLength}) extends past the end of the file ({metadataLength} bytes)");
        for (int i = 0; i < ReservedRegions.Length; i++)
        {
            if (ReservedRegions[i] == (0, 0)) continue;
            if (i != ProfileRegion || (Compatible & CompatibleFeatures.PrefetchProfile) == 0)
                throw Bad(path, $"reserved region {i} is set, but no feature that uses it is enabled");
        }
        if ((Compatible & CompatibleFeatures.PrefetchProfile) != 0)
        {
            var (po, pl) = ReservedRegions[ProfileRegion];
            long dataEnd = InlineData ? DataOffset + VirtualSize : bitmapEnd;
            if (!HasBacking) throw Bad(path, "prefetch profile without a backing");
            if (po % 4096 != 0 || po < dataEnd || pl < PrefetchProfile.HeaderBytes || pl > PrefetchProfile.SizeFor(PrefetchProfile.MaxEntries)
                || po > metadataLength || pl > metadataLength - po)
                throw Bad(path, $"prefetch profile region [{po}, +{pl}) overlaps other metadata or lies past the end of the file");
        }
        if (InlineData)
        {
            if (DataFile.Length != 0) throw Bad(path, "inline data and a data file name are both set");
            if (DataOffset < bitmapEnd || DataOffset % 4096 != 0)
                throw Bad(path, $"data offset {DataOffset} overlaps metadata or is not 4096-aligned");
            if (DataOffset > MaxVirtualSize * 2) throw Bad(path, $"data offset {DataOffset} is out of range");
        }
        else
        {
            if (DataOffset != 0) throw Bad(path, "data offset set without inline data");
            if (DataFile.Length == 0) throw Bad(path, "no data file name and no inline data");
            if (DataFile.Contains('/') || DataFile is "." or "..")
                throw Bad(path, $"data file name '{DataFile}' must be a plain file name in the image's directory");
        }
        Prefetch.Validate(BlockSize, path);
    }

    /// <summary>
    /// As qemu reads a backing name: a ':' before any '/' makes a protocol prefix ("nbd:", "json:",
    /// "nbd+unix:"); only plain paths and http(s) URLs are backings here.
    /// </summary>
    public static bool LooksLikeProtocol(string backing) =>
        backing.Contains(':') && !backing.Split(':')[0].Contains('/')
        && !backing.StartsWith("http://", StringComparison.Ordinal) && !backing.StartsWith("https://", StringComparison.Ordinal);

    private static string DescribeIncompatible(IncompatibleFeatures f)
    {
        var names = new List<string>();
        if ((f & IncompatibleFeatures.CompactTable) != 0) names.Add("compact table");
        if ((f & IncompatibleFeatures.Journal) != 0) names.Add("journal");
        if ((f & IncompatibleFeatures.Snapshots) != 0) names.Add("snapshots");
        var rest = f & ~(IncompatibleFeatures.CompactTable | IncompatibleFeatures.Journal | IncompatibleFeatures.Snapshots);
        if (rest != 0) names.Add($"unknown bits 0x{(ulong)rest:x}");
        return string.Join(", ", names);
    }

    private static FvdException Bad(string? path, string message) => new(FvdErrorKind.InvalidFormat, message, path);
}
