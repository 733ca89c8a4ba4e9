// The fvdmount executable as a user runs it: foreground and daemon modes, signals, external umount, errors.
using System.Diagnostics;
using Fvd.Core.Io;

namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class FvdMountTests : IDisposable
{
    private const long Mib = 1 << 20;
    private readonly string _dir;
    private readonly string _img;
    private readonly string _mnt;

    public FvdMountTests()
    {
        Kernel.Require();
        _dir = Directory.CreateTempSubdirectory("fvdmount-test-").FullName;
        _img = Path.Combine(_dir, "vm1.img");
        _mnt = Path.Combine(_dir, "mnt");
        Directory.CreateDirectory(_mnt);
        FileDevice.Create(_img, 8 * Mib).Dispose();
    }

    public void Dispose()
    {
        if (Kernel.IsMounted(_mnt)) Kernel.Run("umount", "-l", _mnt);
        try { Directory.Delete(_dir, recursive: true); }
        catch (IOException) { }
    }

    private string View => Path.Combine(_mnt, "vm1.raw");

    private static Process Start(params string[] args)
    {
        var psi = new ProcessStartInfo(Kernel.FvdMountPath())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        return p;
    }

    /// <summary>Waits until the mount answers requests (it shows in mountinfo before INIT is done).</summary>
    private void WaitReady(Process p)
    {
        Kernel.WaitFor(() => p.HasExited || (Kernel.IsMounted(_mnt) && HasFiles(_mnt)), 30, "the mount");
        Assert.False(p.HasExited, "fvdmount exited early");
    }

    private static bool HasFiles(string dir)
    {
        try { return Directory.GetFiles(dir).Length > 0; }
        catch (IOException) { return false; }
    }

    private static string StopAndCollect(Process p, int seconds, out int rc)
    {
        var err = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(seconds * 1000))
        {
            TestLibc.kill(p.Id, 9);
            Assert.Fail("fvdmount did not exit");
        }
        rc = p.ExitCode;
        return err.Result;
    }

    [Fact]
    public void Sigterm_unmounts_drains_flushes_and_exits_0()
    {
        using var p = Start("-f", _img, _mnt);
        WaitReady(p);
        Assert.False(p.HasExited, p.HasExited ? p.StandardError.ReadToEnd() : "");
        var pattern = Kernel.Pattern(100_000, 3);
        string pat = Path.Combine(_dir, "p");
        File.WriteAllBytes(pat, pattern);
        Kernel.Ok("dd", $"if={pat}", $"of={View}", "bs=4096", "seek=4097", "oflag=seek_bytes,direct", "conv=notrunc", "status=none");

        Assert.Equal(0, TestLibc.kill(p.Id, TestLibc.SIGTERM));
        string err = StopAndCollect(p, 20, out int rc);
        Assert.True(rc == 0, $"exit {rc}: {err}");
        Assert.False(Kernel.IsMounted(_mnt));
        var image = File.ReadAllBytes(_img);
        Assert.Equal(pattern, image.AsSpan(4097, pattern.Length).ToArray());
        // The image was closed: another writer can lock it now.
        using var dev = FileDevice.Open(_img, readOnly: false);
        dev.Lock(exclusive: true);
    }

    [Fact]
    public async Task Debug_traces_requests_to_stderr()
    {
        using var p = Start("-d", _img, _mnt);
        var err = p.StandardError.ReadToEndAsync();
        WaitReady(p);
        Kernel.Ok("dd", $"if={View}", "of=/dev/null", "bs=4096", "count=1", "iflag=direct", "status=none");
        TestLibc.kill(p.Id, TestLibc.SIGTERM);
        Assert.True(p.WaitForExit(20_000));
        string trace = await err;
        Assert.Equal(0, p.ExitCode);
        Assert.Contains("INIT node=0 -> ok", trace, StringComparison.Ordinal);
        Assert.Contains("READ node=2 off=0 size=4096 -> ok 4096 bytes", trace, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Busy_mount_keeps_serving_on_sigterm_until_released()
    {
        using var p = Start("-f", _img, _mnt);
        WaitReady(p);
        var errTask = p.StandardError.ReadToEndAsync();
        using (var holder = new FileStream(View, FileMode.Open, FileAccess.Read))
        {
            Assert.Equal(0, TestLibc.kill(p.Id, TestLibc.SIGTERM));
            Thread.Sleep(700);
            Assert.False(p.HasExited);
            Assert.True(Kernel.IsMounted(_mnt));
            var buf = new byte[10];
            Assert.Equal(10, holder.Read(buf)); // still served
        }
        Assert.Equal(0, TestLibc.kill(p.Id, TestLibc.SIGTERM));
        Assert.True(p.WaitForExit(20_000), "fvdmount did not exit after the holder closed");
        Assert.Equal(0, p.ExitCode);
        Assert.Contains("busy", await errTask, StringComparison.Ordinal);
        Assert.False(Kernel.IsMounted(_mnt));
    }

    [Fact]
    public void Daemon_mode_returns_once_mounted_and_the_daemon_exits_on_external_umount()
    {
        var (rc, _, err) = Kernel.RunIn(null, 60, Kernel.FvdMountPath(), "-o", "ro,allow_other,uid=1000,gid=1000,umask=027", _img, _mnt);
        Assert.True(rc == 0, $"exit {rc}: {err}");
        Assert.True(Kernel.IsMounted(_mnt));
        var (_, stat, _) = Kernel.Run("stat", "-c", "%a %u %g %s", View);
        Assert.Equal($"440 1000 1000 {8 * Mib}", stat.Trim()); // ro drops write bits
        Assert.ThrowsAny<IOException>(() => new FileStream(View, FileMode.Open, FileAccess.ReadWrite).Dispose());
        string mountLine = File.ReadLines("/proc/self/mountinfo").First(l => l.Contains(_mnt, StringComparison.Ordinal));
        Assert.Contains("allow_other", mountLine, StringComparison.Ordinal);
        Assert.Contains("default_permissions", mountLine, StringComparison.Ordinal);

        Kernel.Ok("umount", _mnt);
        // The daemon saw ENODEV, closed the image and exited: its lock is gone.
        Kernel.WaitFor(() =>
        {
            using var dev = FileDevice.Open(_img, readOnly: false);
            try { dev.Lock(exclusive: true); return true; }
            catch (Fvd.Core.FvdException) { return false; }
        }, 20, "the daemon to release the image");
    }

    [Fact]
    public void Lazy_umount_detaches_a_busy_mount_and_exits_when_the_last_user_closes()
    {
        using var p = Start("-f", "-o", "lazy_umount", _img, _mnt);
        WaitReady(p);
        var holder = new FileStream(View, FileMode.Open, FileAccess.ReadWrite);
        Assert.Equal(0, TestLibc.kill(p.Id, TestLibc.SIGINT));
        Kernel.WaitFor(() => !Kernel.IsMounted(_mnt), 10, "the detach");
        holder.Write(new byte[] { 1, 2, 3 }); // the open file still works after the detach
        holder.Flush(flushToDisk: true);
        Assert.False(p.HasExited);
        holder.Dispose();
        string err = StopAndCollect(p, 20, out int rc);
        Assert.True(rc == 0, $"exit {rc}: {err}");
        Assert.Contains("detached", err, StringComparison.Ordinal);
        Assert.Equal(new byte[] { 1, 2, 3 }, File.ReadAllBytes(_img).AsSpan(0, 3).ToArray());
    }

    [Fact]
    public void Several_images_appear_as_raw_files()
    {
        string img2 = Path.Combine(_dir, "data.fvd");
        FileDevice.Create(img2, 2 * Mib).Dispose();
        using var p = Start("-f", "-o", "threads=2", _img, img2, _mnt);
        WaitReady(p);
        Assert.Equal(["data.raw", "vm1.raw"], Directory.GetFiles(_mnt).Select(f => Path.GetFileName(f)).Order());
        Assert.Equal(2 * Mib, new FileInfo(Path.Combine(_mnt, "data.raw")).Length);
        TestLibc.kill(p.Id, TestLibc.SIGTERM);
        StopAndCollect(p, 20, out int rc);
        Assert.Equal(0, rc);
    }

    [Theory]
    [InlineData("missing-image", 2, "image not found")]
    [InlineData("missing-mountpoint", 2, "mountpoint does not exist")]
    [InlineData("mountpoint-is-file", 2, "not a directory")]
    [InlineData("bad-option", 1, "unknown mount option")]
    [InlineData("bad-umask", 1, "octal")]
    [InlineData("no-mountpoint", 1, "MOUNTPOINT")]
    public void User_errors_give_one_line_and_the_documented_exit_code(string what, int code, string message)
    {
        string[] args = what switch
        {
            "missing-image" => ["-f", Path.Combine(_dir, "nope.img"), _mnt],
            "missing-mountpoint" => [_img, Path.Combine(_dir, "nodir")],
            "mountpoint-is-file" => [_img, _img],
            "bad-option" => ["-o", "frobnicate", _img, _mnt],
            "bad-umask" => ["-o", "umask=99x", _img, _mnt],
            _ => [_img],
        };
        var (rc, _, err) = Kernel.RunIn(null, 60, Kernel.FvdMountPath(), args);
        Assert.Equal(code, rc);
        Assert.Contains(message, err, StringComparison.Ordinal);
        Assert.StartsWith("fvdmount: ", err, StringComparison.Ordinal);
        Assert.False(Kernel.IsMounted(_mnt));
    }

    [Fact]
    public void Mount_helper_runs_fvdmount_with_mount8_arguments()
    {
        string helper = Path.Combine(RepoRoot(), "packaging", "mount.fuse.fvd");
        var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[] { helper, _img, _mnt, "-n", "-o", "rw,nosuid,nodev,ro,x-systemd.automount", "-t", "fuse.fvd" })
            psi.ArgumentList.Add(a);
        psi.Environment["FVDMOUNT"] = Kernel.FvdMountPath();
        using (var p = Process.Start(psi)!)
        {
            string err = p.StandardError.ReadToEnd();
            Assert.True(p.WaitForExit(60_000));
            Assert.True(p.ExitCode == 0, $"helper exited {p.ExitCode}: {err}");
        }
        Assert.True(Kernel.IsMounted(_mnt));
        string line = File.ReadLines("/proc/self/mountinfo").First(l => l.Contains(_mnt, StringComparison.Ordinal));
        Assert.Contains(" ro,", line, StringComparison.Ordinal);
        Assert.Contains("fuse.fvd", line, StringComparison.Ordinal);
        Kernel.Ok("umount", _mnt);
    }

    [Fact]
    public void Qemu_io_with_cache_none_writes_reads_and_discards()
    {
        Kernel.RequireTool("qemu-io", "qemu-utils");
        using var p = Start("-f", _img, _mnt);
        WaitReady(p);
        var (rc, o, e) = Kernel.Run("qemu-io", "-f", "raw", "-t", "none", "-n",
            "-c", "write -P 0xab 512 65536", "-c", "read -P 0xab 512 65536",
            "-c", "discard 65536 1M", "-c", "read -P 0 65536 1M", "-c", "write -z 2M 4096", "-c", "read -P 0 2M 4096", View);
        Assert.True(rc == 0 && !o.Contains("fail", StringComparison.OrdinalIgnoreCase) && !o.Contains("Pattern verification", StringComparison.Ordinal),
            $"qemu-io exited {rc}\n{o}\n{e}");
        var (rc2, map, e2) = Kernel.Run("qemu-img", "map", "-f", "raw", "--output=json", View);
        Assert.True(rc2 == 0, e2);
        Assert.Contains("\"data\": false", map, StringComparison.Ordinal); // holes are visible through SEEK_HOLE
        TestLibc.kill(p.Id, TestLibc.SIGTERM);
        StopAndCollect(p, 20, out int rc3);
        Assert.Equal(0, rc3);
    }

    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "FvdFuse.sln"))) return d.FullName;
        Assert.Fail("cannot find the repository root");
        return null!;
    }

    [Fact]
    public void Fusermount3_unmount_from_outside_ends_the_foreground_process_with_0()
    {
        Kernel.RequireTool("fusermount3", "fuse3");
        using var p = Start("-f", _img, _mnt);
        WaitReady(p);
        Kernel.Ok("fusermount3", "-u", _mnt);
        string err = StopAndCollect(p, 20, out int rc);
        Assert.True(rc == 0, $"exit {rc}: {err}");
        Assert.False(Kernel.IsMounted(_mnt));
    }

    [Fact]
    public void No_access_to_dev_fuse_is_reported_in_one_line()
    {
        Kernel.RequireTool("setpriv", "util-linux");
        // The user must be able to reach the image and the mount point to get as far as /dev/fuse.
        // If the build output or the .NET runtime is not readable by 'nobody' (a checkout under /root), this
        // check cannot be made from outside; the message itself is one line in FuseMount.Mount.
        var probe = Kernel.RunIn(null, 60, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            "env", "HOME=/tmp", Kernel.FvdMountPath(), "--version");
        if (probe.Rc != 0)
        {
            Console.Error.WriteLine($"No_access_to_dev_fuse_is_reported_in_one_line: 'nobody' cannot run fvdmount here ({probe.Err.Trim()}); not checked");
            return;
        }
        Kernel.Ok("chmod", "0777", _dir, _mnt);
        Kernel.Ok("chmod", "0666", _img);
        string mode = Kernel.Run("stat", "-c", "%a", "/dev/fuse").Out.Trim();
        Kernel.Ok("chmod", "0600", "/dev/fuse"); // a system where only root may use FUSE
        try
        {
            var (rc, _, err) = Kernel.RunIn(null, 60, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                "env", "HOME=/tmp", Kernel.FvdMountPath(), "-f", _img, _mnt);
            Assert.Equal(2, rc);
            Assert.StartsWith("fvdmount: cannot open /dev/fuse: permission denied", err, StringComparison.Ordinal);
            Assert.Single(err.Trim().Split('\n'));
        }
        finally
        {
            Kernel.Ok("chmod", mode, "/dev/fuse");
        }
    }

    [Fact]
    public void A_mountpoint_that_is_already_mounted_is_reported_busy()
    {
        using var m = new TempMount(Mib);
        var (rc, _, err) = Kernel.RunIn(null, 60, Kernel.FvdMountPath(), _img, m.MountPoint);
        Assert.Equal(2, rc);
        Assert.Contains("busy", err, StringComparison.Ordinal);
    }
}
