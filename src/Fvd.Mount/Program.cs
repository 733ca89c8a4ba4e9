// fvdmount: mounts images as NAME.raw files in a directory, via Fvd.Fuse.
// Exit codes: 0 success, 1 usage or configuration error, 2 runtime error (image, mountpoint, /dev/fuse, mount...).
using System.Diagnostics;
using Fvd.Core;
using Fvd.Core.Io;
using Fvd.Fuse;
using Microsoft.Extensions.Configuration;
using Mono.Unix.Native;

namespace Fvd.Mount;

public static class Program
{
    public const int ExitOk = 0, ExitUsage = 1, ExitRuntime = 2;

    /// <summary>Set in the environment of the background child that does the real work.</summary>
    private const string DaemonEnv = "_FVDMOUNT_DAEMON_CHILD";

    private const string Usage =
        "usage: fvdmount [-f] [-d] [-o OPTIONS] [--config FILE] IMAGE [IMAGE...] MOUNTPOINT\n" +
        "options (-o, comma-separated): ro, rw, allow_other, default_permissions, uid=N, gid=N, umask=OCT,\n" +
        "  threads=N, direct_io, partitions, lazy_umount, debug, cor=on|off, prefetch=on|off|SECONDS,\n" +
        "  prefetch_max_read=RATE, prefetch_min_read=RATE, record_profile=FILE, passthrough=on|off, lock_wait=SECONDS,\n" +
        "  clone_fd=on|off. Environment: FVDMOUNT_<KEY>. See fvdmount(1).";

    public static int Main(string[] args)
    {
        MountSettings settings;
        try
        {
            var parsed = CommandLine.Parse(args);
            if (parsed.Help) { Console.WriteLine(Usage); return ExitOk; }
            if (parsed.Version) { Console.WriteLine($"fvdmount {typeof(Program).Assembly.GetName().Version}"); return ExitOk; }
            settings = LoadSettings(parsed, Environment.GetEnvironmentVariables());
        }
        catch (Exception e) when (e is UsageException or InvalidOperationException or FormatException or InvalidDataException)
        {
            Console.Error.WriteLine($"fvdmount: {e.Message}");
            Console.Error.WriteLine(Usage);
            return ExitUsage;
        }

        bool child = Environment.GetEnvironmentVariable(DaemonEnv) == "1";
        if (!settings.Foreground && !child)
        {
            // Catch the obvious mistakes here, where the user sees them, before going to the background.
            int pre = Preflight(settings, out string? msg);
            if (pre != ExitOk) { Console.Error.WriteLine($"fvdmount: {msg}"); return pre; }
            return Daemonize(args);
        }
        return Serve(settings, child);
    }

    /// <summary>JSON (--config) &lt; FVDMOUNT_* environment &lt; command line; positionals give images and mountpoint.</summary>
    public static MountSettings LoadSettings(ParsedArgs parsed, System.Collections.IDictionary environment)
    {
        var builder = new ConfigurationBuilder();
        if (parsed.ConfigFile is { } cfg)
        {
            string full = Path.GetFullPath(cfg);
            if (!File.Exists(full)) throw new UsageException($"{cfg}: configuration file not found");
            builder.AddJsonFile(full, optional: false, reloadOnChange: false);
        }
        var env = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        foreach (System.Collections.DictionaryEntry e in environment)
        {
            if (e.Key is string k && k.StartsWith("FVDMOUNT_", StringComparison.OrdinalIgnoreCase))
                env[k["FVDMOUNT_".Length..]] = e.Value as string;
        }
        builder.AddInMemoryCollection(env);
        builder.AddInMemoryCollection(parsed.Settings);
        var config = builder.Build();
        var settings = config.Get<MountSettings>(o => o.ErrorOnUnknownConfiguration = false) ?? new MountSettings();
        if (parsed.Positionals.Count > 0)
        {
            if (parsed.Positionals.Count < 2) throw new UsageException("need at least one IMAGE and a MOUNTPOINT");
            settings.Images = parsed.Positionals.Take(parsed.Positionals.Count - 1).ToArray();
            settings.MountPoint = parsed.Positionals[^1];
        }
        if (settings.Images.Length == 0 || string.IsNullOrEmpty(settings.MountPoint))
            throw new UsageException("need at least one IMAGE and a MOUNTPOINT");
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var img in settings.Images)
        {
            if (!names.Add(ImageOpener.DisplayName(img)))
                throw new UsageException($"two images would both appear as '{ImageOpener.DisplayName(img)}'");
        }
        _ = settings.ToFuseOptions(); // validates umask/threads now
        _ = settings.ToImageOptions(); // and cor/prefetch/rates
        if (!string.IsNullOrEmpty(settings.RecordProfile) && settings.Images.Length != 1)
            throw new UsageException("record_profile=FILE records one image: mount it alone");
        // The daemon changes to "/" once mounted: resolve the log's name against the caller's directory now.
        if (!string.IsNullOrEmpty(settings.RecordProfile)) settings.RecordProfile = Path.GetFullPath(settings.RecordProfile);
        return settings;
    }

    /// <summary>Checks a user can act on, each with a one-line message. Returns an exit code.</summary>
    public static int Preflight(MountSettings s, out string? message)
    {
        message = null;
        foreach (var img in s.Images)
        {
            if (!File.Exists(img)) { message = $"{img}: image not found"; return ExitRuntime; }
        }
        string mnt = s.MountPoint!;
        if (!Directory.Exists(mnt))
        {
            message = File.Exists(mnt) ? $"{mnt}: mountpoint is not a directory" : $"{mnt}: mountpoint does not exist";
            return ExitRuntime;
        }
        if (IsMountPoint(Path.GetFullPath(mnt)))
        {
            message = $"{mnt}: mountpoint busy (something is already mounted there)";
            return ExitRuntime;
        }
        if (!File.Exists("/dev/fuse"))
        {
            message = "/dev/fuse does not exist (modprobe fuse; in a container, pass --device /dev/fuse)";
            return ExitRuntime;
        }
        return ExitOk;
    }

    private static int Serve(MountSettings s, bool child)
    {
        if (child) _ = Syscall.setsid(); // leave the caller's session so its hangup does not reach us

        // Catch stop signals from the start: one arriving while mounting must unmount, not kill us mid-way.
        var stop = new StopState();
        using var signals = StopSignals.Watch(stop.Signal);
        return ServeCore(s, child, stop);
    }

    /// <summary>Remembers a stop signal that arrives before the server exists.</summary>
    private sealed class StopState
    {
        private readonly object _lock = new();
        private FuseServer? _server;
        private bool _requested;

        public void Signal()
        {
            FuseServer? srv;
            lock (_lock) { _requested = true; srv = _server; }
            srv?.RequestStop();
        }

        public void Attach(FuseServer server)
        {
            bool now;
            lock (_lock) { _server = server; now = _requested; }
            if (now) server.RequestStop(); // a signal came while we were mounting
        }
    }

    private static int ServeCore(MountSettings s, bool child, StopState stop)
    {
        int pre = Preflight(s, out string? msg);
        if (pre != ExitOk) return Fail(child, pre, msg!);

        var devices = new List<OpenedImage>();
        FuseServer server;
        try
        {
            var images = new List<FuseImage>();
            var imageOptions = s.ToImageOptions();
            // The background child's stderr reaches the user only if mounting fails; send the wait notice
            // up its stdout channel instead, for the parent to print (see Daemonize).
            if (child) imageOptions = imageOptions with { LockWaitNotice = msg => { Console.Out.WriteLine($"WAIT {msg}"); Console.Out.Flush(); } };
            foreach (var path in s.Images.Select(Path.GetFullPath)) // full: the daemon later changes to "/"
            {
                var opened = ImageOpener.Open(path, imageOptions);
                devices.Add(opened);
                images.Add(opened.ToFuseImage());
            }
            string source = string.Join(",", s.Images.Select(Path.GetFullPath));
            server = FuseServer.Mount(s.MountPoint!, source, images, s.ToFuseOptions());
        }
        catch (Exception e) when (e is FvdException or IOException or UnauthorizedAccessException or ArgumentException or UsageException)
        {
            CloseAll(devices);
            string text = e is FvdException f ? f.OneLine : e.Message;
            return Fail(child, e is UsageException ? ExitUsage : ExitRuntime, text);
        }

        if (child)
        {
            Console.Out.WriteLine("OK");
            Console.Out.Flush();
            DetachStdio();
            // Everything is open and the mount point is resolved: do not keep the caller's directory busy.
            Directory.SetCurrentDirectory("/");
        }
        else if (s.Debug)
        {
            Console.Error.WriteLine($"fvdmount: serving {string.Join(", ", s.Images)} at {server.MountPoint}");
        }

        server.ConnectionEnded = () => { foreach (var o in devices) o.MarkClosing(); };
        stop.Attach(server);

        int rc = server.WaitAndShutdown(() => { if (!CloseAll(devices, s.RecordProfile)) Environment.ExitCode = ExitRuntime; });
        server.Dispose();
        return rc != 0 ? rc : Environment.ExitCode;
    }

    /// <summary>Flushes and closes every image (for an FVD image this marks it clean). False if any failed.</summary>
    private static bool CloseAll(List<OpenedImage> opened, string? recordProfile = null)
    {
        bool ok = true;
        // First of all: a new fvdmount or fvd-img started right after umount waits for us instead of failing.
        foreach (var o in opened) o.MarkClosing();
        foreach (var o in opened)
        {
            if (string.IsNullOrEmpty(recordProfile) || o.Fvd is null) continue;
            try
            {
                int n = o.WriteRecordedProfile(recordProfile);
                Console.Error.WriteLine($"fvdmount: wrote {n} read ranges to {recordProfile} (store them with: fvd-img profile record {o.Path} {recordProfile})");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FvdException)
            {
                Console.Error.WriteLine($"fvdmount: record_profile: {e.Message}");
                ok = false;
            }
        }
        foreach (var d in opened.Select(o => o.Device))
        {
            try { d.Flush(); }
            catch (FvdException e) { Console.Error.WriteLine($"fvdmount: flush at shutdown: {e.OneLine}"); ok = false; }
            try { d.Dispose(); }
            catch (Exception e) when (e is FvdException or IOException) { Console.Error.WriteLine($"fvdmount: close: {e.Message}"); ok = false; }
        }
        opened.Clear();
        return ok;
    }

    private static int Fail(bool child, int code, string message)
    {
        if (child)
        {
            Console.Out.WriteLine($"ERR {code} {message}");
            Console.Out.Flush();
        }
        else
        {
            Console.Error.WriteLine($"fvdmount: {message}");
        }
        return code;
    }

    /// <summary>
    /// Starts this program again in the background and waits until it reports "OK" (mounted) or "ERR code msg"
    /// on its stdout. No fork(): the .NET runtime is multi-threaded, so re-executing is the safe way.
    /// </summary>
    private static int Daemonize(string[] args)
    {
        string host = Environment.ProcessPath ?? throw new InvalidOperationException("cannot find own executable");
        var psi = new ProcessStartInfo(host)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        // Run as `dotnet fvdmount.dll`: the host needs the assembly path first.
        if (Path.GetFileNameWithoutExtension(host) == "dotnet")
            psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, typeof(Program).Assembly.GetName().Name + ".dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment[DaemonEnv] = "1";

        using var proc = Process.Start(psi)!;
        proc.StandardInput.Close();
        var stderr = new System.Text.StringBuilder();
        proc.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        proc.BeginErrorReadLine();
        string? line = proc.StandardOutput.ReadLine();
        while (line is not null && line.StartsWith("WAIT ", StringComparison.Ordinal))
        {
            Console.Error.WriteLine($"fvdmount: {line[5..]}");
            line = proc.StandardOutput.ReadLine();
        }
        if (line == "OK") return ExitOk;
        if (line is not null && line.StartsWith("ERR ", StringComparison.Ordinal))
        {
            var parts = line.Split(' ', 3);
            Console.Error.WriteLine($"fvdmount: {(parts.Length > 2 ? parts[2] : "unknown error")}");
            return parts.Length > 1 && int.TryParse(parts[1], out int c) ? c : ExitRuntime;
        }
        proc.WaitForExit(5000);
        lock (stderr) Console.Error.Write(stderr.ToString());
        Console.Error.WriteLine($"fvdmount: the background process exited before mounting (exit code {(proc.HasExited ? proc.ExitCode : -1)})");
        return ExitRuntime;
    }

    /// <summary>After reporting success the parent is gone: point stdin/stdout/stderr at /dev/null.</summary>
    private static void DetachStdio()
    {
        using var devnull = File.Open("/dev/null", FileMode.Open, FileAccess.ReadWrite);
        int fd = (int)devnull.SafeFileHandle.DangerousGetHandle();
        _ = Syscall.dup2(fd, 0);
        _ = Syscall.dup2(fd, 1);
        _ = Syscall.dup2(fd, 2);
    }

    /// <summary>True when the path is itself a mount point (field 5 of /proc/self/mountinfo).</summary>
    public static bool IsMountPoint(string fullPath)
    {
        string want = fullPath.TrimEnd('/');
        if (want.Length == 0) want = "/";
        try
        {
            foreach (var line in File.ReadLines("/proc/self/mountinfo"))
            {
                var f = line.Split(' ');
                if (f.Length > 4 && Unescape(f[4]) == want) return true;
            }
        }
        catch (IOException) { }
        return false;
    }

    // mountinfo escapes space, tab, newline and backslash as \ooo.
    private static string Unescape(string s) =>
        !s.Contains('\\') ? s : System.Text.RegularExpressions.Regex.Replace(s, @"\\([0-7]{3})",
            m => ((char)Convert.ToInt32(m.Groups[1].Value, 8)).ToString());
}
