using System.Globalization;
using Fvd.Fuse;

namespace Fvd.Mount;

/// <summary>Everything fvdmount can be told, bound from JSON (--config), FVDMOUNT_* variables and the command line.</summary>
public sealed class MountSettings
{
    public string[] Images { get; set; } = [];
    public string? MountPoint { get; set; }
    public bool Foreground { get; set; }
    public bool Debug { get; set; }
    public bool ReadOnly { get; set; }
    public bool AllowOther { get; set; }
    public bool DefaultPermissions { get; set; }
    public uint? Uid { get; set; }
    public uint? Gid { get; set; }
    /// <summary>Octal, as for mount(8): "022".</summary>
    public string Umask { get; set; } = "022";
    public int Threads { get; set; } = 4;
    public bool DirectIo { get; set; }
    /// <summary>On a stop signal while busy, detach lazily instead of refusing to stop.</summary>
    public bool LazyUnmount { get; set; }

    public FuseOptions ToFuseOptions()
    {
        uint umask;
        try { umask = Convert.ToUInt32(Umask, 8); }
        catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
        { throw new UsageException($"umask '{Umask}' is not an octal number"); }
        if (umask > 0x1FF) throw new UsageException($"umask '{Umask}' is out of range (000-777)");
        if (Threads is < 1 or > 64) throw new UsageException($"threads={Threads.ToString(CultureInfo.InvariantCulture)} is out of range (1-64)");
        return new FuseOptions
        {
            ReadOnly = ReadOnly,
            AllowOther = AllowOther,
            DefaultPermissions = DefaultPermissions || AllowOther,
            Uid = Uid,
            Gid = Gid,
            Umask = umask,
            Debug = Debug,
            Threads = Threads,
            DirectIo = DirectIo,
            LazyUnmount = LazyUnmount,
        };
    }
}

/// <summary>A mistake in the command line or configuration (exit code 1).</summary>
public sealed class UsageException(string message) : Exception(message);
