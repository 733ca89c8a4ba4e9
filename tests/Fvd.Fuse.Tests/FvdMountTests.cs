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
        Kernel.WaitFor(() => Kernel.IsMounted(_mnt) || p.HasExited, 30, "the mount");
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
    public async Task Busy_mount_keeps_serving_on_sigterm_until_released()
    {
        using var p = Start("-f", _img, _mnt);
        Kernel.WaitFor(() => Kernel.IsMounted(_mnt) || p.HasExited, 30, "the mount");
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
    public void Several_images_appear_as_raw_files()
    {
        string img2 = Path.Combine(_dir, "data.fvd");
        FileDevice.Create(img2, 2 * Mib).Dispose();
        using var p = Start("-f", "-o", "threads=2", _img, img2, _mnt);
        Kernel.WaitFor(() => Kernel.IsMounted(_mnt) || p.HasExited, 30, "the mount");
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
    public void A_mountpoint_that_is_already_mounted_is_reported_busy()
    {
        using var m = new TempMount(Mib);
        var (rc, _, err) = Kernel.RunIn(null, 60, Kernel.FvdMountPath(), _img, m.MountPoint);
        Assert.Equal(2, rc);
        Assert.Contains("busy", err, StringComparison.Ordinal);
    }
}
