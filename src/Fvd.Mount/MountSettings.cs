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
    /// <summary>Show each partition of a disk as NAME-pN.raw (implies direct I/O, no passthrough).</summary>
    public bool Partitions { get; set; }
    /// <summary>On a stop signal while busy, detach lazily instead of refusing to stop.</summary>
    public bool LazyUnmount { get; set; }
    /// <summary>on|off: copy-on-read for FVD images; unset = the image header's flag.</summary>
    public string? CopyOnRead { get; set; }
    /// <summary>on|off|SECONDS: when prefetch starts; unset = the header's start delay (off with RecordProfile).</summary>
    public string? Prefetch { get; set; }
    /// <summary>Prefetch read rate cap, bytes/s with an optional K/M/G suffix (powers of 1024); 0 = none.</summary>
    public string? PrefetchMaxRead { get; set; }
    /// <summary>Prefetch pauses while its read rate falls below this (bytes/s, K/M/G).</summary>
    public string? PrefetchMinRead { get; set; }
    /// <summary>FILE: record backing reads while mounted; written at unmount as OFFSET LENGTH lines.</summary>
    public string? RecordProfile { get; set; }
    /// <summary>on|off: FUSE passthrough for FVD images whose data file is the whole disk.</summary>
    public string Passthrough { get; set; } = "on";
    /// <summary>
    /// Seconds to wait for an image locked by a process that is closing it (a daemon still flushing after
    /// umount, a killed one still exiting); 0 = fail at once. A live writer is always refused at once.
    /// </summary>
    public int LockWait { get; set; } = 30;
    /// <summary>on|off: one /dev/fuse descriptor per request thread (FUSE_DEV_IOC_CLONE).</summary>
    public string CloneFd { get; set; } = "off";
    /// <summary>Show .fvd/NAME.json status files in the mount root.</summary>
    public bool StatusDirectory { get; set; } = true;

    /// <summary>The per-image open options; validates the values (UsageException).</summary>
    public ImageOptions ToImageOptions()
    {
        int? delay = null;
        if (Prefetch is { } p)
        {
            delay = p.Trim().ToLowerInvariant() switch
            {
                "on" or "true" or "yes" or "now" => 0,
                "off" or "false" or "no" or "never" => -1,
                var n when int.TryParse(n, NumberStyles.None, CultureInfo.InvariantCulture, out int sec) => sec,
                _ => throw new UsageException($"prefetch={p}: expected on, off or a delay in seconds"),
            };
        }
        else if (!string.IsNullOrEmpty(RecordProfile))
        {
            delay = -1; // prefetch's own reads would end up in the recorded profile
        }
        return new ImageOptions
        {
            ReadOnly = ReadOnly,
            CopyOnRead = CopyOnRead is null ? null : Switch("cor", CopyOnRead),
            PrefetchDelaySeconds = delay,
            PrefetchMaxReadKiBps = PrefetchMaxRead is null ? null : KiBps("prefetch_max_read", PrefetchMaxRead),
            PrefetchMinReadKiBps = PrefetchMinRead is null ? null : KiBps("prefetch_min_read", PrefetchMinRead),
            RecordProfile = !string.IsNullOrEmpty(RecordProfile),
            Passthrough = Switch("passthrough", Passthrough),
            LockWaitSeconds = LockWait is >= 0 and <= 3600 ? LockWait
                : throw new UsageException($"lock_wait={LockWait.ToString(CultureInfo.InvariantCulture)} is out of range (0-3600 seconds)"),
        };
    }

    /// <summary>on/off (also true/false, yes/no, 1/0).</summary>
    public static bool Switch(string option, string value) => value.Trim().ToLowerInvariant() switch
    {
        "on" or "true" or "yes" or "1" => true,
        "off" or "false" or "no" or "0" => false,
        _ => throw new UsageException($"{option}={value}: expected on or off"),
    };

    /// <summary>Bytes per second ("800K", "20M", "1G", "5000000") as whole KiB/s; 0 stays 0 (no limit).</summary>
    public static int KiBps(string option, string value)
    {
        string v = value.Trim();
        long mult = 1;
        if (v.Length > 0 && char.ToUpperInvariant(v[^1]) is 'K' or 'M' or 'G' or 'T')
        {
            mult = char.ToUpperInvariant(v[^1]) switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, _ => 1L << 40 };
            v = v[..^1];
        }
        if (!decimal.TryParse(v, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out decimal n))
            throw new UsageException($"{option}={value}: expected bytes per second, e.g. 800K, 20M or 1G");
        decimal kib = Math.Ceiling(n * mult / 1024m);
        if (kib > int.MaxValue) throw new UsageException($"{option}={value} is too large");
        return (int)kib;
    }

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
            Partitions = Partitions,
            LazyUnmount = LazyUnmount,
            Passthrough = Switch("passthrough", Passthrough),
            StatusDirectory = StatusDirectory,
            CloneFd = Switch("clone_fd", CloneFd),
        };
    }
}

/// <summary>A mistake in the command line or configuration (exit code 1).</summary>
public sealed class UsageException(string message) : Exception(message);
