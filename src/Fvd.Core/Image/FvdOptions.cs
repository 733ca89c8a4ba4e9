using Fvd.Core.Format;
using Fvd.Core.Io;

namespace Fvd.Core.Image;

public sealed record FvdCreateOptions
{
    /// <summary>Virtual disk size in bytes; rounded up to 512. May exceed the backing (paper's min-size template).</summary>
    public required long VirtualSize { get; init; }
    /// <summary>Backing (template) path as given; stored as given, resolved against the image's directory.</summary>
    public string? BackingFile { get; init; }
    /// <summary>Explicit backing format ("raw", "qcow2" or "fvd"); never probed.</summary>
    public string BackingFormat { get; init; } = "raw";
    /// <summary>Block size in bytes; 0 = smallest power of two >= 4 KiB that keeps the bitmap at most 4 MiB.</summary>
    public int BlockSize { get; init; }
    /// <summary>Data file name (plain name in the image's directory); null = NAME.data beside NAME.fvd.</summary>
    public string? DataFile { get; init; }
    /// <summary>Keep data inside the metadata file instead of a separate data file.</summary>
    public bool InlineData { get; init; }
    /// <summary>
    /// Mark backing blocks that are holes or all zeros as local at creation (paper 3.3.3). null = on for
    /// local backings, off for http(s) ones (it would read the whole template).
    /// </summary>
    public bool? ZeroAware { get; init; }
    /// <summary>Copy-on-read default stored in the image; null = on for http(s) backings, off otherwise.</summary>
    public bool? CopyOnRead { get; init; }
    public PrefetchSettings Prefetch { get; init; } = PrefetchSettings.Default;
    /// <summary>Replace an existing image.</summary>
    public bool Overwrite { get; init; }
    /// <summary>Reports progress of the zero-aware scan as (bytes done, bytes total).</summary>
    public Action<long, long>? Progress { get; init; }
}

public sealed record FvdOpenOptions
{
    public bool ReadOnly { get; init; }
    /// <summary>Accept a backing that is a block device (refused by default: reliability.md 6).</summary>
    public bool AllowDeviceBacking { get; init; }
    /// <summary>Take no lock (read-only inspection by tools while a daemon has the image open).</summary>
    public bool NoLock { get; init; }
    /// <summary>Open even when the backing file is missing (info/check); reads of backing blocks then fail.</summary>
    public bool AllowMissingBacking { get; init; }
    /// <summary>
    /// How long to wait when the image (or its data file) is locked by a process that is closing it or
    /// exiting, e.g. a daemon still flushing after umount; a live writer is refused at once. Default 30 s;
    /// LockWait.None never waits.
    /// </summary>
    public LockWait LockWait { get; init; } = LockWait.Default;
    /// <summary>The FVD images above this one in a backing chain (by device and inode): meeting one again is a loop.</summary>
    internal IReadOnlyList<FileIdentity> ChainAbove { get; init; } = [];
    /// <summary>Do not open the backing (commit writes it itself, under an exclusive lock).</summary>
    internal bool SkipBacking { get; init; }
}

/// <summary>What a range of the virtual disk maps to (fvd-img map).</summary>
public enum MapKind
{
    /// <summary>Local, allocated in the data file.</summary>
    Data,
    /// <summary>Local and reads as zeros (a hole in the data file, or past the backing's end, unwritten).</summary>
    Zero,
    /// <summary>Read from the backing image.</summary>
    Backing,
    /// <summary>Read from the backing image, where it is a hole.</summary>
    BackingZero,
}

public readonly record struct MapEntry(long Offset, long Length, MapKind Kind);
