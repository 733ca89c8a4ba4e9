// fvdmount's command line, mount(8)-style: `fvdmount [-f] [-d] [-o opt,opt=val] [--config FILE] IMAGE... MOUNTPOINT`.
// It becomes configuration keys so that one binder handles JSON, environment and command line alike.
namespace Fvd.Mount;

public sealed class ParsedArgs
{
    public Dictionary<string, string?> Settings { get; } = new(StringComparer.OrdinalIgnoreCase);
    public List<string> Positionals { get; } = [];
    public string? ConfigFile { get; set; }
    public bool Help { get; set; }
    public bool Version { get; set; }
}

public static class CommandLine
{
    // Options mount(8) passes to helpers that mean nothing to us (or are handled by mount flags we set anyway).
    private static readonly HashSet<string> Ignored = new(StringComparer.Ordinal)
    {
        "defaults", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "auto", "noauto", "nofail",
        "_netdev", "user", "nouser", "users", "async", "sync", "atime", "noatime", "relatime", "strictatime",
        "nodiratime", "diratime", "loud", "silent",
    };

    public static ParsedArgs Parse(IReadOnlyList<string> args)
    {
        var p = new ParsedArgs();
        bool onlyPositionals = false;
        for (int i = 0; i < args.Count; i++)
        {
            string a = args[i];
            if (onlyPositionals || a.Length < 2 || a[0] != '-') { p.Positionals.Add(a); continue; }
            switch (a)
            {
                case "--": onlyPositionals = true; break;
                case "-f": case "--foreground": p.Settings["Foreground"] = "true"; break;
                case "-d": case "--debug": p.Settings["Debug"] = "true"; p.Settings["Foreground"] = "true"; break;
                case "-h": case "--help": p.Help = true; break;
                case "-V": case "--version": p.Version = true; break;
                case "-o":
                    if (++i >= args.Count) throw new UsageException("-o needs an option list");
                    ParseOptions(args[i], p.Settings);
                    break;
                case "--config":
                    if (++i >= args.Count) throw new UsageException("--config needs a file name");
                    p.ConfigFile = args[i];
                    break;
                default:
                    if (a.StartsWith("-o", StringComparison.Ordinal)) { ParseOptions(a[2..], p.Settings); break; }
                    if (a.StartsWith("--config=", StringComparison.Ordinal)) { p.ConfigFile = a["--config=".Length..]; break; }
                    throw new UsageException($"unknown option '{a}'");
            }
        }
        return p;
    }

    public static void ParseOptions(string list, IDictionary<string, string?> settings)
    {
        foreach (var raw in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = raw.IndexOf('=', StringComparison.Ordinal);
            string key = eq < 0 ? raw : raw[..eq];
            string? val = eq < 0 ? null : raw[(eq + 1)..];
            switch (key)
            {
                case "ro": settings["ReadOnly"] = "true"; break;
                case "rw": settings["ReadOnly"] = "false"; break;
                case "allow_other": settings["AllowOther"] = "true"; break;
                case "default_permissions": settings["DefaultPermissions"] = "true"; break;
                case "debug": settings["Debug"] = "true"; settings["Foreground"] = "true"; break;
                case "direct_io": settings["DirectIo"] = "true"; break;
                case "partitions": settings["Partitions"] = "true"; break;
                case "lazy_umount": settings["LazyUnmount"] = "true"; break;
                case "uid": settings["Uid"] = Need(key, val); break;
                case "gid": settings["Gid"] = Need(key, val); break;
                case "umask": settings["Umask"] = Need(key, val); break;
                case "threads": settings["Threads"] = Need(key, val); break;
                case "cor": settings["CopyOnRead"] = Need(key, val); break;
                case "prefetch": settings["Prefetch"] = val ?? "on"; break;
                case "prefetch_max_read": settings["PrefetchMaxRead"] = Need(key, val); break;
                case "prefetch_min_read": settings["PrefetchMinRead"] = Need(key, val); break;
                case "record_profile": settings["RecordProfile"] = Need(key, val); break;
                case "passthrough": settings["Passthrough"] = val ?? "on"; break;
                case "lock_wait": settings["LockWait"] = Need(key, val); break;
                case "clone_fd": settings["CloneFd"] = val ?? "on"; break;
                default:
                    if (Ignored.Contains(key) || key.StartsWith("x-", StringComparison.Ordinal) || key == "comment") break;
                    throw new UsageException($"unknown mount option '{raw}'");
            }
        }
    }

    private static string Need(string key, string? val) =>
        string.IsNullOrEmpty(val) ? throw new UsageException($"option '{key}' needs a value ({key}=...)") : val;
}
