// A test rig for the real fvdmount binary over an FVD image whose backing is a raw template with random data
// (min-size: the virtual disk is larger than the template). Cleans up mounts, loop devices and the daemon even
// when a test fails.
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Fvd.Core.Format;
using Fvd.Core.Image;

namespace Fvd.Fuse.Tests;

internal sealed class FvdRig : IDisposable
{
    public const long Mib = 1 << 20;

    public string Dir { get; }
    public string Template { get; }
    public string Image { get; }
    public string MountPoint { get; }
    public string FsDir { get; }
    public string View => Path.Combine(MountPoint, "vm.raw");
    public long TemplateSize { get; }
    public long VirtualSize { get; }
    public byte[] TemplateBytes { get; }
    public string TemplateHash { get; }

    private Process? _daemon;
    private readonly StringBuilder _daemonErr = new();
    private readonly List<string> _loops = [];

    public FvdRig(long templateSize, long virtualSize, int blockSize = 0, bool copyOnRead = false, int seed = 1)
    {
        Kernel.Require();
        Dir = Directory.CreateTempSubdirectory("fvdrig-").FullName;
        Template = Path.Combine(Dir, "template.raw");
        Image = Path.Combine(Dir, "vm.fvd");
        MountPoint = Path.Combine(Dir, "mnt");
        FsDir = Path.Combine(Dir, "fs");
        Directory.CreateDirectory(MountPoint);
        Directory.CreateDirectory(FsDir);
        TemplateSize = templateSize;
        VirtualSize = virtualSize;
        TemplateBytes = Kernel.Pattern(checked((int)templateSize), seed);
        File.WriteAllBytes(Template, TemplateBytes);
        TemplateHash = HashFile(Template);
        FvdImage.Create(Image, new FvdCreateOptions
        {
            VirtualSize = virtualSize,
            BackingFile = "template.raw", // relative to the image's directory
            BlockSize = blockSize,
            CopyOnRead = copyOnRead,
        });
    }

    /// <summary>The content the view must have before any write: the template, then zeros.</summary>
    public byte[] InitialContent()
    {
        var b = new byte[VirtualSize];
        TemplateBytes.CopyTo(b, 0);
        return b;
    }

    public string DaemonStderr { get { lock (_daemonErr) return _daemonErr.ToString(); } }

    /// <summary>Starts fvdmount -f in the background and waits until the view answers.</summary>
    public void Mount(params string[] options)
    {
        Assert.True(_daemon is null || _daemon.HasExited, "already mounted");
        lock (_daemonErr) _daemonErr.Clear();
        var psi = new ProcessStartInfo(Kernel.FvdMountPath())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("-f");
        foreach (var o in options) psi.ArgumentList.Add(o);
        psi.ArgumentList.Add(Image);
        psi.ArgumentList.Add(MountPoint);
        var p = Process.Start(psi)!;
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_daemonErr) _daemonErr.AppendLine(e.Data); };
        p.OutputDataReceived += (_, _) => { };
        p.BeginErrorReadLine();
        p.BeginOutputReadLine();
        _daemon = p;
        Kernel.WaitFor(() => p.HasExited || (Kernel.IsMounted(MountPoint) && File.Exists(View)), 30, "the fvdmount mount");
        Assert.False(p.HasExited, $"fvdmount exited early ({(p.HasExited ? p.ExitCode : 0)}): {DaemonStderr}");
    }

    /// <summary>SIGTERM: fvdmount unmounts, flushes, marks the image clean and exits 0.</summary>
    public void Unmount()
    {
        var p = _daemon ?? throw new InvalidOperationException("not mounted");
        Assert.Equal(0, TestLibc.kill(p.Id, TestLibc.SIGTERM));
        if (!p.WaitForExit(60_000))
        {
            TestLibc.kill(p.Id, 9);
            Assert.Fail($"fvdmount did not exit after SIGTERM: {DaemonStderr}");
        }
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"fvdmount exited {p.ExitCode}: {DaemonStderr}");
        Assert.False(Kernel.IsMounted(MountPoint), "still mounted after fvdmount exited");
        p.Dispose();
        _daemon = null;
    }

    /// <summary>kill -9 of the daemon; the dead mount is then detached with fusermount3 -u (or umount -l).</summary>
    public void Kill9()
    {
        var p = _daemon ?? throw new InvalidOperationException("not mounted");
        Assert.Equal(0, TestLibc.kill(p.Id, 9));
        Assert.True(p.WaitForExit(20_000), "fvdmount survived kill -9");
        p.Dispose();
        _daemon = null;
        DetachDeadMount();
    }

    private void DetachDeadMount()
    {
        if (!Kernel.IsMounted(MountPoint)) return;
        if (Kernel.Run("fusermount3", "-u", MountPoint).Rc != 0 && Kernel.IsMounted(MountPoint))
            Kernel.Run("umount", "-l", MountPoint);
        Kernel.WaitFor(() => !Kernel.IsMounted(MountPoint), 20, "the dead mount to go away");
    }

    public string AttachLoop()
    {
        var (rc, o, e) = Kernel.Run("losetup", "--direct-io=on", "--find", "--show", View);
        Assert.True(rc == 0, $"losetup failed: {o} {e}");
        string loop = o.Trim();
        _loops.Add(loop);
        return loop;
    }

    public void DetachLoop(string loop)
    {
        Kernel.Ok("losetup", "-d", loop);
        _loops.Remove(loop);
        Kernel.WaitFor(() => Kernel.Run("losetup", "-j", View).Out.Trim().Length == 0, 20, "the loop device detach");
    }

    public FvdHeader ReadHeader()
    {
        // FileDevice, not FileStream: .NET's FileStream takes a flock that conflicts with the daemon's lock.
        using var f = Fvd.Core.Io.FileDevice.Open(Image, readOnly: true);
        var hb = new byte[Math.Min(f.Length, HeaderSlots.Count * FvdHeader.Size)];
        f.Read(0, hb);
        return HeaderSlots.Choose(hb, f.Length, Image).Header;
    }

    public bool IsClean => (ReadHeader().Flags & HeaderFlags.CleanShutdown) != 0;

    /// <summary>The whole virtual disk read through the library (read-only, no lock), not through the view.</summary>
    public byte[] ReadWithLibrary(out bool wasUnclean)
    {
        using var img = FvdImage.Open(Image, new FvdOpenOptions { ReadOnly = true, NoLock = true });
        wasUnclean = img.WasUnclean;
        var b = new byte[img.Length];
        img.Read(0, b);
        return b;
    }

    /// <summary>Reads [offset, offset+length) of the view with O_DIRECT (dd), so the page cache cannot answer.</summary>
    public byte[] ReadView(long offset, long length, bool direct = true)
    {
        string back = Path.Combine(Dir, "readback");
        Kernel.Ok("dd", $"if={View}", $"of={back}", "bs=1M", $"skip={offset}", $"count={length}",
            "iflag=skip_bytes,count_bytes,fullblock" + (direct ? ",direct" : ""), "status=none");
        var b = File.ReadAllBytes(back);
        File.Delete(back);
        return b;
    }

    /// <summary>fvd-img check through the library: no errors, nothing to repair.</summary>
    public void AssertCheckClean()
    {
        var r = ImageChecker.Check(Image);
        Assert.True(r.ExitCode == 0, $"check exit {r.ExitCode}: {string.Join("; ", r.Messages.Select(m => $"{m.Severity}: {m.Text}"))}");
    }

    /// <summary>A tool built next to the tests (same configuration), e.g. ("Fvd.Reliability", "fvd-reliability.dll").</summary>
    public static string BuiltTool(string project, string file)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        string config = dir.Parent!.Name;
        for (var d = dir; d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, "src", project, "bin", config, "net10.0", file);
            if (File.Exists(candidate)) return candidate;
        }
        Assert.Fail($"cannot find the built {file} (build the solution first)");
        return null!;
    }

    public static string HashFile(string path)
    {
        using var dev = Fvd.Core.Io.FileDevice.Open(path, readOnly: true);
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buf = new byte[1 << 20];
        for (long off = 0; off < dev.Length; off += buf.Length)
        {
            int n = (int)Math.Min(buf.Length, dev.Length - off);
            dev.Read(off, buf.AsSpan(0, n));
            h.AppendData(buf, 0, n);
        }
        return Convert.ToHexString(h.GetHashAndReset());
    }

    /// <summary>Index of the first differing byte, or -1; for readable failure messages on large buffers.</summary>
    public static long FirstDiff(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        if (a.Length != b.Length) return Math.Min(a.Length, b.Length);
        long i = a.CommonPrefixLength(b);
        return i == a.Length ? -1 : i;
    }

    public static void SameBytes(ReadOnlySpan<byte> expected, ReadOnlySpan<byte> actual, string what)
    {
        long d = FirstDiff(expected, actual);
        Assert.True(d < 0, $"{what}: first difference at byte {d} (lengths {expected.Length}/{actual.Length})");
    }

    public void Dispose()
    {
        try
        {
            if (Kernel.IsMounted(FsDir)) Kernel.Run("umount", "-l", FsDir);
            foreach (var loop in _loops.ToArray()) Kernel.Run("losetup", "-d", loop);
            if (_daemon is { HasExited: false } p)
            {
                TestLibc.kill(p.Id, TestLibc.SIGTERM);
                if (!p.WaitForExit(20_000)) TestLibc.kill(p.Id, 9);
                p.WaitForExit(10_000);
            }
            DetachDeadMount();
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"rig cleanup: {e.Message}");
        }
        try { Directory.Delete(Dir, recursive: true); }
        catch (IOException e) { Console.Error.WriteLine($"rig cleanup: {e.Message}"); }
    }
}
