using System.Diagnostics;
using Mono.Unix.Native;

namespace Fvd.Fuse.Tests;

/// <summary>
/// An ordinary user the tests create (useradd) and run fvd-img and fvdmount as (setpriv), with /dev/fuse
/// readable and writable by everyone as Debian ships it (made so for the tests, restored afterwards).
/// </summary>
public sealed class UnprivilegedUser : IDisposable
{
    public const string Name = "fvdfuse-test";
    private readonly uint? _fuseMode;
    private readonly bool _created;

    public UnprivilegedUser()
    {
        Kernel.Require();
        Kernel.RequireTool("fusermount3", "fuse3");
        Kernel.RequireTool("setpriv", "util-linux");
        if (Syscall.getpwnam(Name) is null)
        {
            Kernel.Ok("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", Name);
            _created = true;
        }
        var pw = Syscall.getpwnam(Name) ?? throw new InvalidOperationException($"useradd did not create {Name}");
        Uid = pw.pw_uid;
        Gid = pw.pw_gid;
        Assert.Equal(0, Syscall.stat("/dev/fuse", out var st));
        uint mode = (uint)st.st_mode & 0xFFF;
        if ((mode & 0x6) != 0x6)
        {
            _fuseMode = mode;
            Assert.Equal(0, Syscall.chmod("/dev/fuse", (FilePermissions)(mode | 0x6)));
        }
    }

    public uint Uid { get; }
    public uint Gid { get; }

    /// <summary>setpriv execs the command itself, so the process started is the command (signals reach it).</summary>
    public ProcessStartInfo Start(string home, string file, params string[] args)
    {
        var psi = new ProcessStartInfo("setpriv")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = home,
        };
        foreach (var a in new[] { "--reuid", Name, "--regid", Name, "--clear-groups", "--", file }.Concat(args)) psi.ArgumentList.Add(a);
        psi.Environment["HOME"] = home;
        return psi;
    }

    public (int Rc, string Out, string Err) Run(string home, string file, params string[] args)
    {
        using var p = Process.Start(Start(home, file, args))!;
        var so = p.StandardOutput.ReadToEndAsync();
        var se = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"{file} {string.Join(' ', args)} (as {Name}) did not finish in 120 s");
        }
        p.WaitForExit();
        return (p.ExitCode, so.Result, se.Result);
    }

    public void Ok(string home, string file, params string[] args)
    {
        var (rc, o, e) = Run(home, file, args);
        Assert.True(rc == 0, $"{file} {string.Join(' ', args)} (as {Name}) exited {rc}\nstdout: {o}\nstderr: {e}");
    }

    public void Dispose()
    {
        if (_fuseMode is uint m) _ = Syscall.chmod("/dev/fuse", (FilePermissions)m);
        if (!_created) return;
        // A daemon still exiting after its unmount would make userdel refuse.
        Kernel.WaitFor(() => Kernel.Run("pgrep", "-u", Name).Rc != 0, 30, $"the processes of {Name} to exit");
        Kernel.Ok("userdel", Name);
    }
}

/// <summary>fvdmount and fvd-img run by a user without root: the mount goes through fusermount3.</summary>
[Collection("kernel")]
public sealed class NonRootMountTests : IClassFixture<UnprivilegedUser>, IDisposable
{
    private const int Mib = 1 << 20;
    private readonly UnprivilegedUser _user;
    private readonly string _dir;
    private readonly string _mnt;

    public NonRootMountTests(UnprivilegedUser user)
    {
        _user = user;
        _dir = Directory.CreateTempSubdirectory("fvdfuse-nonroot-").FullName;
        _mnt = Path.Combine(_dir, "mnt");
        Directory.CreateDirectory(_mnt);
        Assert.Equal(0, Syscall.chmod(_dir, (FilePermissions)Convert.ToUInt32("755", 8)));
        Assert.Equal(0, Syscall.chown(_dir, (int)user.Uid, (int)user.Gid));
        Assert.Equal(0, Syscall.chown(_mnt, (int)user.Uid, (int)user.Gid));
        // The template belongs to root and is only readable by the user: it is never written.
        File.WriteAllBytes(Path.Combine(_dir, "t.raw"), Kernel.Pattern(16 * Mib, 1));
        _user.Ok(_dir, Kernel.FvdImgPath(), "create", "-b", "t.raw", "-F", "raw", "v.fvd", "32M");
    }

    private string View => Path.Combine(_mnt, "v.raw");

    /// <summary>The mountinfo options of our mount point, or null when nothing is mounted there.</summary>
    private string? MountOptions() =>
        File.ReadLines("/proc/self/mountinfo").Select(l => l.Split(' ')).FirstOrDefault(f => f.Length > 4 && f[4] == _mnt) is { } f
            ? string.Join(' ', f[5..]) : null;

    [Fact]
    public void MountWriteFsyncUnmountRemount_AsUser_ContentIntact()
    {
        var expected = File.ReadAllBytes(Path.Combine(_dir, "t.raw"));
        Array.Resize(ref expected, 32 * Mib);
        var patch = Kernel.Pattern(256 * 1024, 2);
        patch.CopyTo(expected, 5 * 64 * 1024);
        patch.CopyTo(expected, 20 * Mib); // past the template: a free write
        File.WriteAllBytes(Path.Combine(_dir, "patch"), patch);
        File.WriteAllBytes(Path.Combine(_dir, "expected"), expected);

        // Mount (background), write with fsync, unmount with fusermount3 -u.
        _user.Ok(_dir, Kernel.FvdMountPath(), "v.fvd", "mnt");
        Assert.Contains($"user_id={_user.Uid}", MountOptions(), StringComparison.Ordinal);
        _user.Ok(_dir, "dd", "if=patch", "of=mnt/v.raw", "bs=64k", "seek=5", "conv=notrunc,fsync", "status=none");
        _user.Ok(_dir, "dd", "if=patch", "of=mnt/v.raw", "bs=1M", "seek=20", "conv=notrunc,fsync", "status=none");
        _user.Ok(_dir, "fusermount3", "-u", "mnt");
        Assert.Null(MountOptions());
        WaitClean();

        // Remount in the foreground; SIGTERM makes fvdmount unmount through fusermount3 itself.
        using (var p = Process.Start(_user.Start(_dir, Kernel.FvdMountPath(), "-f", "v.fvd", "mnt"))!)
        {
            var err = new System.Text.StringBuilder();
            p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (err) err.AppendLine(e.Data); };
            p.BeginErrorReadLine();
            Kernel.WaitFor(() => p.HasExited || MountOptions() is not null, 30, "the fvdmount mount");
            Assert.False(p.HasExited, $"fvdmount exited early: {err}");
            _user.Ok(_dir, "cmp", "mnt/v.raw", "expected");
            Assert.Equal(0, TestLibc.kill(p.Id, TestLibc.SIGTERM));
            Assert.True(p.WaitForExit(60_000), "fvdmount did not exit after SIGTERM");
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, $"fvdmount exited {p.ExitCode}: {err}");
            Assert.Null(MountOptions());
        }

        // And once more, unmounted by the user with umount(8).
        _user.Ok(_dir, Kernel.FvdMountPath(), "v.fvd", "mnt");
        _user.Ok(_dir, "cmp", "mnt/v.raw", "expected");
        _user.Ok(_dir, "umount", "mnt");
        Assert.Null(MountOptions());
        WaitClean();
        _user.Ok(_dir, Kernel.FvdImgPath(), "info", "v.fvd");
    }

    [Fact]
    public void AllowOther_NeedsUserAllowOtherInFuseConf()
    {
        const string conf = "/etc/fuse.conf";
        byte[]? original = File.Exists(conf) ? File.ReadAllBytes(conf) : null;
        try
        {
            if (original is not null)
                File.WriteAllLines(conf, File.ReadAllLines(conf).Where(l => l.Trim() != "user_allow_other"));
            var (rc, _, err) = _user.Run(_dir, Kernel.FvdMountPath(), "-o", "allow_other", "v.fvd", "mnt");
            Assert.Equal(2, rc);
            Assert.Equal("fvdmount: -o allow_other needs 'user_allow_other' in /etc/fuse.conf for a mount by a user other than root",
                err.Trim());
            Assert.Null(MountOptions());

            File.AppendAllText(conf, "\nuser_allow_other\n");
            _user.Ok(_dir, Kernel.FvdMountPath(), "-o", "allow_other", "v.fvd", "mnt");
            Assert.Contains("allow_other", MountOptions(), StringComparison.Ordinal);
            // Root is another user here: without allow_other the kernel would refuse it (EACCES).
            using (var f = File.OpenRead(View)) Assert.Equal(32L * Mib, f.Length);
            _user.Ok(_dir, "fusermount3", "-u", "mnt");
            WaitClean();
        }
        finally
        {
            if (original is null) File.Delete(conf);
            else File.WriteAllBytes(conf, original);
        }
    }

    [Fact]
    public void ImageFilesTheUserCannotWrite_RefusedAtMount()
    {
        string data = Path.Combine(_dir, "v.data");
        Assert.Equal(0, Syscall.chmod(data, (FilePermissions)Convert.ToUInt32("444", 8)));
        var (rc, _, err) = _user.Run(_dir, Kernel.FvdMountPath(), "v.fvd", "mnt");
        Assert.Equal(2, rc);
        Assert.Contains("v.data", err, StringComparison.Ordinal);
        Assert.Contains("Permission denied", err, StringComparison.Ordinal);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Null(MountOptions());

        // Read-only, the same files mount.
        _user.Ok(_dir, Kernel.FvdMountPath(), "-o", "ro", "v.fvd", "mnt");
        Assert.Contains("ro", MountOptions()!.Split(' ')[0].Split(','));
        _user.Ok(_dir, "cmp", "-n", (16 * Mib).ToString(System.Globalization.CultureInfo.InvariantCulture), "mnt/v.raw", "t.raw");
        _user.Ok(_dir, "fusermount3", "-u", "mnt");
        WaitClean();
    }

    /// <summary>After an unmount the daemon flushes and exits; then the image checks clean (as the user).</summary>
    private void WaitClean() =>
        Kernel.WaitFor(() => _user.Run(_dir, Kernel.FvdImgPath(), "check", "v.fvd").Rc == 0, 30, "a clean image after unmount");

    public void Dispose()
    {
        if (MountOptions() is not null) Kernel.Run("umount", "-l", _mnt);
        try { Directory.Delete(_dir, recursive: true); }
        catch (IOException e) { Console.Error.WriteLine($"cleanup: {e.Message}"); }
    }
}
