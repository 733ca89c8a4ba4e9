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
    /// <summary>Bypass the page cache for every open, not only O_DIRECT opens.</summary>
    public bool DirectIo { get; set; }
    /// <summary>When the mount is busy at a stop signal, detach it lazily instead of refusing to stop.</summary>
    public bool LazyUnmount { get; set; }
    /// <summary>Kernel cache time for attributes; st_blocks changes with writes, so keep it short.</summary>
    public TimeSpan AttrTimeout { get; set; } = TimeSpan.FromSeconds(1);
    /// <summary>Kernel cache time for names; the directory never changes.</summary>
    public TimeSpan EntryTimeout { get; set; } = TimeSpan.FromHours(1);

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
}
