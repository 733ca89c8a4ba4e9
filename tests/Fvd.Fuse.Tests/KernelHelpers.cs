using System.Diagnostics;
using System.Runtime.InteropServices;
using Fvd.Core.Io;

namespace Fvd.Fuse.Tests;

/// <summary>Real-kernel tests share mounts, loop devices and CPU: run them one at a time.</summary>
[CollectionDefinition("kernel", DisableParallelization = true)]
public sealed class KernelCollection;

/// <summary>The few calls the tests make, through the project's one libc door (Libc) and Mono.Unix.</summary>
internal static class TestLibc
{
    public const int SEEK_DATA = Libc.SEEK_DATA, SEEK_HOLE = Libc.SEEK_HOLE, SIGTERM = 15, SIGINT = 2, ENXIO = Libc.ENXIO;

    public static long lseek(int fd, long offset, int whence) => Libc.lseek(fd, offset, whence);

    public static int kill(int pid, int sig) => Mono.Unix.Native.Syscall.kill(pid, Mono.Unix.Native.NativeConvert.ToSignum(sig));

    public static uint geteuid() => Mono.Unix.Native.Syscall.geteuid();

    /// <summary>umount(2) from this process: returns as the syscall does, with no umount(8) to start first.</summary>
    public static int umount2(string target, int flags) => Libc.umount2(target, flags);
}

internal static class Kernel
{
    /// <summary>Fails (never skips) with a clear message when this machine cannot run FUSE tests.</summary>
    public static void Require()
    {
        if (!File.Exists("/dev/fuse")) Assert.Fail("/dev/fuse does not exist: the real-kernel FUSE tests need it (modprobe fuse; in a container, --device /dev/fuse)");
        if (TestLibc.geteuid() != 0) Assert.Fail("the real-kernel FUSE tests must run as root (mount(2) needs CAP_SYS_ADMIN)");
    }

    public static (int Rc, string Out, string Err) Run(string file, params string[] args) => RunIn(null, 120, file, args);

    public static (int Rc, string Out, string Err) RunIn(string? stdinFile, int timeoutSec, string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var so = p.StandardOutput.ReadToEndAsync();
        var se = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutSec * 1000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"{file} {string.Join(' ', args)} did not finish in {timeoutSec} s");
        }
        p.WaitForExit();
        return (p.ExitCode, so.Result, se.Result);
    }

    public static void Ok(string file, params string[] args)
    {
        var (rc, o, e) = Run(file, args);
        Assert.True(rc == 0, $"{file} {string.Join(' ', args)} exited {rc}\nstdout: {o}\nstderr: {e}");
    }

    public static bool Has(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':')
            .Concat(["/sbin", "/usr/sbin"]).Any(d => File.Exists(Path.Combine(d, tool)));

    public static void RequireTool(string tool, string package)
    {
        if (!Has(tool)) Assert.Fail($"'{tool}' is not installed; the FUSE tests need it (apt-get install {package})");
    }

    public static bool IsMounted(string dir)
    {
        string full = Path.GetFullPath(dir).TrimEnd('/');
        return File.ReadLines("/proc/self/mountinfo").Any(l => l.Split(' ') is var f && f.Length > 4 && f[4] == full);
    }

    public static void WaitFor(Func<bool> cond, int seconds, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!cond())
        {
            if (sw.Elapsed.TotalSeconds > seconds) Assert.Fail($"timed out waiting for {what}");
            Thread.Sleep(50);
        }
    }

    /// <summary>The fvdmount executable built next to these tests (same configuration).</summary>
    public static string FvdMountPath() => BuiltTool("Fvd.Mount", "fvdmount");

    /// <summary>The fvd-img executable built by the same solution build.</summary>
    public static string FvdImgPath() => BuiltTool("Fvd.Img", "fvd-img");

    private static string BuiltTool(string project, string exe)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        string config = dir.Parent!.Name; // bin/<config>/net10.0/
        for (var d = dir; d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, "src", project, "bin", config, "net10.0", exe);
            if (File.Exists(candidate)) return candidate;
        }
        Assert.Fail($"cannot find the built {exe} next to the tests (build the solution first)");
        return null!;
    }

    public static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }
}

/// <summary>A sparse image file mounted in-process at a temporary directory as disk.raw.</summary>
internal sealed class TempMount : IDisposable
{
    public string Dir { get; }
    public string ImagePath { get; }
    public string MountPoint { get; }
    public string View => Path.Combine(MountPoint, "disk.raw");
    public FileDevice Device { get; }
    public FuseServer Server { get; }

    public TempMount(long size, FuseOptions? options = null)
    {
        Kernel.Require();
        Dir = Directory.CreateTempSubdirectory("fvdfuse-test-").FullName;
        ImagePath = Path.Combine(Dir, "disk.img");
        MountPoint = Path.Combine(Dir, "mnt");
        Directory.CreateDirectory(MountPoint);
        FileDevice.Create(ImagePath, size).Dispose();
        Device = FileDevice.Open(ImagePath, readOnly: options?.ReadOnly ?? false);
        options ??= new FuseOptions();
        options.AttrTimeout = TimeSpan.Zero; // tests look at st_blocks right after changes
        Server = FuseServer.Mount(MountPoint, ImagePath, [new FuseImage("disk.raw", Device)], options);
    }

    public void Dispose()
    {
        Server.Dispose();
        Device.Dispose();
        try { Directory.Delete(Dir, recursive: true); }
        catch (IOException e) { Console.Error.WriteLine($"cleanup: {e.Message}"); }
    }
}
