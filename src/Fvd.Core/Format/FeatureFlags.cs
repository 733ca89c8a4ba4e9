namespace Fvd.Core.Format;

/// <summary>
/// Feature bits, after qcow2 v3: an unknown incompatible bit makes an image unopenable; an unknown compatible
/// bit is ignored; unknown autoclear bits are cleared by a writer that does not know them.
/// </summary>
[Flags]
public enum IncompatibleFeatures : ulong
{
    None = 0,
    /// <summary>Data lives inside the metadata file at DataOffset (no separate data file).</summary>
    InlineData = 1 << 0,
    /// <summary>Reserved: compact image (one-level table + journal). Not implemented by this version.</summary>
    CompactTable = 1 << 1,
    /// <summary>Reserved: metadata journal.</summary>
    Journal = 1 << 2,
    /// <summary>Reserved: internal snapshot table.</summary>
    Snapshots = 1 << 3,
    /// <summary>The image was found corrupt; it may only be opened read-only or repaired.</summary>
    Corrupt = 1 << 4,
    /// <summary>
    /// Two header copies (offsets 0 and 4096) with a generation; the bitmap starts at 8192. Incompatible so a
    /// reader that rewrites only the first copy cannot leave a stale second copy that wins later.
    /// </summary>
    TwoHeaderSlots = 1 << 5,
}

[Flags]
public enum CompatibleFeatures : ulong
{
    None = 0,
    /// <summary>A prefetch profile region is present (header region 3).</summary>
    PrefetchProfile = 1 << 0,
    /// <summary>Reserved: backing-content hashes are present.</summary>
    BackingHashes = 1 << 1,
}

[Flags]
public enum AutoclearFeatures : ulong
{
    None = 0,
}

/// <summary>State flags stored in the header (not features: they change during normal use).</summary>
[Flags]
public enum HeaderFlags : uint
{
    None = 0,
    /// <summary>Set on a clean close; cleared while the image is open for writing (paper: clean_shutdown).</summary>
    CleanShutdown = 1 << 0,
    /// <summary>Every block below the backing size is local; the backing is no longer needed (paper 3.3.5).</summary>
    PrefetchFinished = 1 << 1,
    /// <summary>Copy-on-read is enabled by default when the image is opened.</summary>
    CopyOnRead = 1 << 2,
}

public static class KnownFeatures
{
    public const IncompatibleFeatures Incompatible = IncompatibleFeatures.InlineData | IncompatibleFeatures.Corrupt | IncompatibleFeatures.TwoHeaderSlots;
    public const CompatibleFeatures Compatible = CompatibleFeatures.PrefetchProfile;
    public const AutoclearFeatures Autoclear = AutoclearFeatures.None;
    public const HeaderFlags Flags = HeaderFlags.CleanShutdown | HeaderFlags.PrefetchFinished | HeaderFlags.CopyOnRead;
}
