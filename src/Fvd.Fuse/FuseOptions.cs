using Fvd.Core.Io;

namespace Fvd.Fuse;

/// <summary>How the server mounts and presents its images.</summary>
public sealed class FuseOptions
{
    /// <summary>Mount read-only (MS_RDONLY) and refuse write opens with EROFS.</summary>
    public bool ReadOnly { get; set; }
    /// <summary>Let users other than the mounting one in (e.g. libvirt-qemu). Implies DefaultPermissions.</summary>
    public bool AllowOther { get; set; }
    /// <summary>Let the kernel check permissions against the mode/uid/gid we report.</summary>
    public bool DefaultPermissions { get; set; }
    /// <summary>Owner shown for the directory and files; null means the mounting user.</summary>
    public uint? Uid { get; set; }
    public uint? Gid { get; set; }
    /// <summary>Permission bits removed from 0666 (files) and 0777 (directory).</summary>
    public uint Umask { get; set; } = Convert.ToUInt32("022", 8);
    /// <summary>Trace every request to stderr.</summary>
    public bool Debug { get; set; }
    /// <summary>Request threads reading /dev/fuse.</summary>
    public int Threads { get; set; } = 4;
    /// <summary>Give each request thread its own /dev/fuse descriptor (FUSE_DEV_IOC_CLONE); falls back to one shared.
    /// Off by default: measured slower under flush-heavy work here (src/Fvd.Fuse/README.md).</summary>
    public bool CloneFd { get; set; }
    /// <summary>Backing workers: threads serving the requests that may wait on a slow backing (0: as many as Threads).</summary>
    public int BackingThreads { get; set; }
    /// <summary>Bypass the page cache for every open, not only O_DIRECT opens.</summary>
    public bool DirectIo { get; set; }
    /// <summary>When the mount is busy at a stop signal, detach it lazily instead of refusing to stop.</summary>
    public bool LazyUnmount { get; set; }
    /// <summary>Kernel cache time for attributes; st_blocks changes with writes, so keep it short.</summary>
    public TimeSpan AttrTimeout { get; set; } = TimeSpan.FromSeconds(1);
    /// <summary>Kernel cache time for names; the directory never changes.</summary>
    public TimeSpan EntryTimeout { get; set; } = TimeSpan.FromHours(1);
    /// <summary>
    /// Pass opens of images whose IPassthroughSource offers a path through to that file in the kernel
    /// (FUSE passthrough, kernel 6.9+). When the kernel refuses, the server logs once and serves normally.
    /// </summary>
    public bool Passthrough { get; set; } = true;
    /// <summary>Show the read-only status directory ".fvd" with NAME.json per image in the mount root
    /// (fvdmount turns it on; off by default so a plain server shows only its images).</summary>
    public bool StatusDirectory { get; set; }
    /// <summary>
    /// Show each partition of an image with an MBR or GPT table as NAME-pN.raw beside it, following table changes.
    /// Opens are then served with direct I/O and never passed through: a disk and its partitions alias each other's
    /// bytes, and every write must reach the server to be seen by the other file and to notice table changes.
    /// </summary>
    public bool Partitions { get; set; }

    internal bool EffectiveDefaultPermissions => DefaultPermissions || AllowOther;
}

/// <summary>One file of the mount: NAME (e.g. "disk.raw") backed by a device the caller owns.</summary>
public sealed class FuseImage
{
    public FuseImage(string name, IBlockDevice device)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('/') || name is "." or ".." || name.Contains('\0'))
            throw new ArgumentException($"invalid file name '{name}'", nameof(name));
        Name = name;
        Device = device;
    }

    public string Name { get; }
    public IBlockDevice Device { get; }
    /// <summary>Adds the device's own fields to its status file (.fvd/NAME.json); null: only the basics.</summary>
    public IStatusSource? Status { get; init; }
    /// <summary>Offers a file the kernel may serve opens from directly; null: never passed through.</summary>
    public IPassthroughSource? Passthrough { get; init; }
    /// <summary>Says which reads and writes may wait on a slow backing; null: every request is local.</summary>
    public IBackingLocality? Locality { get; init; }
}

/// <summary>
/// A device whose requests may have to wait on a slow backing (a template over HTTP): those are served by the
/// server's backing workers, so that local I/O and fsync never queue behind them.
/// </summary>
public interface IBackingLocality
{
    /// <summary>True when this read (or write) may read the backing; false: it touches local storage only.</summary>
    bool MayReadBacking(long offset, long length, bool write);
}

/// <summary>Writes a device's live status as JSON properties (called for each open of its status file).</summary>
public interface IStatusSource
{
    /// <summary>Writes properties (not the enclosing object) describing the device now.</summary>
    void WriteStatus(System.Text.Json.Utf8JsonWriter writer);
}

/// <summary>
/// A device whose content is, right now, byte for byte the content of one file at the same offsets, so the
/// kernel may read and write that file directly (FUSE passthrough).
/// </summary>
public interface IPassthroughSource
{
    /// <summary>The file to pass opens through to, or null while that is not (yet) possible. Once non-null it
    /// must stay valid for the rest of the mount.</summary>
    string? PassthroughPath { get; }
}
