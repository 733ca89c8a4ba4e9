// A read-only projection of an image for tools (fvd-img info): every header field plus what the host says
// about the files (allocated bytes, backing presence). Built without taking the image lock, so it works
// while a daemon has the image mounted.
using Fvd.Core.Format;
using Mono.Unix;

namespace Fvd.Core.Image;

public sealed record ImageInfo
{
    public required string Filename { get; init; }
    public string Format => "fvd";
    public required FvdHeader Header { get; init; }
    public long VirtualSize => Header.VirtualSize;
    /// <summary>Bytes the host allocated for the metadata file and the data file (st_blocks * 512).</summary>
    public required long DiskSize { get; init; }
    public required long MetadataFileSize { get; init; }
    public int BlockSize => Header.BlockSize;
    /// <summary>The backing path as stored in the header; null without backing.</summary>
    public string? BackingFile => Header.HasBacking ? Header.BackingPath : null;
    public string? BackingFullPath { get; init; }
    public string? BackingFormat => Header.HasBacking ? Header.BackingFormat : null;
    /// <summary>Bytes of the backing the bitmap covers (header backing_size).</summary>
    public long BackingSize => Header.BackingSize;
    /// <summary>Size of the backing file now, or null when it is missing.</summary>
    public long? BackingActualSize { get; init; }
    public string? DataFile => Header.InlineData ? null : Header.DataFile;
    public required string DataPath { get; init; }
    public long? DataFileSize { get; init; }
    public bool InlineData => Header.InlineData;
    public long BitmapOffset => Header.BitmapOffset;
    public long BitmapLength => Header.BitmapLength;
    public required long BlocksLocal { get; init; }
    public long BlocksTotal => Header.BitmapBlocks;
    public bool Clean => (Header.Flags & HeaderFlags.CleanShutdown) != 0;
    public bool PrefetchFinished => (Header.Flags & HeaderFlags.PrefetchFinished) != 0;
    public bool CopyOnRead => (Header.Flags & HeaderFlags.CopyOnRead) != 0;
    public bool Corrupt => (Header.Incompatible & IncompatibleFeatures.Corrupt) != 0;
    public PrefetchSettings Prefetch => Header.Prefetch;

    /// <summary>Opens the image read-only, without the lock and tolerating a missing backing.</summary>
    public static ImageInfo Read(string path)
    {
        using var img = FvdImage.Open(path, new FvdOpenOptions { ReadOnly = true, NoLock = true, AllowMissingBacking = true });
        var h = img.Header;
        string? backingFull = h.HasBacking ? FvdImage.ResolveRelative(path, h.BackingPath) : null;
        long? backingActual = null;
        if (backingFull is not null)
        {
            try
            {
                // A qcow2's or fvd's file size is not the size of the disk it holds.
                if (h.BackingFormat != "raw") backingActual = img.BackingDevice?.Length;
                else if (File.Exists(backingFull)) backingActual = new FileInfo(backingFull).Length;
            }
            catch (IOException) { }
        }
        long disk = AllocatedBytes(path);
        long? dataSize = null;
        if (!h.InlineData)
        {
            disk += AllocatedBytes(img.DataPath);
            dataSize = File.Exists(img.DataPath) ? new FileInfo(img.DataPath).Length : null;
        }
        return new ImageInfo
        {
            Filename = path,
            Header = h,
            DiskSize = disk,
            MetadataFileSize = new FileInfo(path).Length,
            BackingFullPath = backingFull,
            BackingActualSize = backingActual,
            DataPath = img.DataPath,
            DataFileSize = dataSize,
            BlocksLocal = img.BlockMap.CountLocal(),
        };
    }

    /// <summary>st_blocks * 512 of a file; 0 when it cannot be stat'ed.</summary>
    public static long AllocatedBytes(string path)
    {
        try
        {
            var fi = new UnixFileInfo(path);
            return fi.Exists ? fi.BlocksAllocated * 512 : 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            return 0;
        }
    }

    /// <summary>Names of the set feature bits (known names, unknown bits as hex).</summary>
    public static IReadOnlyList<string> FeatureNames(ulong bits, IReadOnlyDictionary<ulong, string> names)
    {
        var list = new List<string>();
        for (int i = 0; i < 64; i++)
        {
            ulong b = 1UL << i;
            if ((bits & b) == 0) continue;
            list.Add(names.TryGetValue(b, out var n) ? n : $"bit{i}");
        }
        return list;
    }

    public static readonly IReadOnlyDictionary<ulong, string> IncompatibleNames = new Dictionary<ulong, string>
    {
        [(ulong)IncompatibleFeatures.InlineData] = "inline-data",
        [(ulong)IncompatibleFeatures.CompactTable] = "compact-table",
        [(ulong)IncompatibleFeatures.Journal] = "journal",
        [(ulong)IncompatibleFeatures.Snapshots] = "snapshots",
        [(ulong)IncompatibleFeatures.Corrupt] = "corrupt",
        [(ulong)IncompatibleFeatures.TwoHeaderSlots] = "two-header-slots",
    };

    public static readonly IReadOnlyDictionary<ulong, string> CompatibleNames = new Dictionary<ulong, string>
    {
        [(ulong)CompatibleFeatures.PrefetchProfile] = "prefetch-profile",
        [(ulong)CompatibleFeatures.BackingHashes] = "backing-hashes",
    };

    public static readonly IReadOnlyDictionary<ulong, string> AutoclearNames = new Dictionary<ulong, string>();
}
