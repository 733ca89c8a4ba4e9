// Making and removing the kernel mount: mount(2) with a /dev/fuse descriptor we open (root, or CAP_SYS_ADMIN),
// or, when mount(2) is not permitted, the setuid helper fusermount3 from the fuse3 package, as any FUSE file
// system does for an ordinary user (man/fvdmount.1, NON-ROOT MOUNTS).
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Fvd.Core;
using Fvd.Core.Io;

namespace Fvd.Fuse;

internal sealed class FuseMount
{
    /// <summary>The helper's name; FVD_FUSERMOUNT overrides it (tests, or a helper outside PATH).</summary>
    internal static string FusermountProgram => Environment.GetEnvironmentVariable("FVD_FUSERMOUNT") is { Length: > 0 } p ? p : "fusermount3";

    private FuseMount(string mountPoint, int fd, bool viaFusermount)
    {
        MountPoint = mountPoint;
        Fd = fd;
        ViaFusermount = viaFusermount;
    }

    public string MountPoint { get; }
    /// <summary>The connection's /dev/fuse descriptor (owned by the caller once returned).</summary>
    public int Fd { get; }
    /// <summary>Mounted by fusermount3: unmounting then goes through it too (umount2 needs CAP_SYS_ADMIN).</summary>
    public bool ViaFusermount { get; }

    /// <summary>
    /// Mounts a new FUSE connection at <paramref name="mountPoint"/> (type fuse.fvd, source
    /// <paramref name="source"/>). Errors are FvdExceptions with a message a user can act on.
    /// </summary>
    public static FuseMount Mount(string mountPoint, string source, FuseOptions options)
    {
        int fd = Libc.open("/dev/fuse", Libc.O_RDWR | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            int err = Marshal.GetLastPInvokeError();
            throw err switch
            {
                Errno.ENOENT => new FvdException(FvdErrorKind.NotFound, "/dev/fuse does not exist (modprobe fuse, or give the container /dev/fuse)"),
                Errno.EACCES or Errno.EPERM => new FvdException(FvdErrorKind.PermissionDenied,
                    "cannot open /dev/fuse: permission denied (it must be readable and writable by this user; Debian makes it 0666)"),
                _ => new FvdException(FvdErrorKind.Io, $"cannot open /dev/fuse: {Libc.StrError(err)}"),
            };
        }

        uint uid = Mono.Unix.Native.Syscall.geteuid(), gid = Mono.Unix.Native.Syscall.getegid();
        var data = string.Create(CultureInfo.InvariantCulture,
            $"fd={fd},rootmode=40000,user_id={uid},group_id={gid},max_read={FuseProtocol.MaxWrite}");
        if (options.EffectiveDefaultPermissions) data += ",default_permissions";
        if (options.AllowOther) data += ",allow_other";
        ulong flags = Libc.MS_NOSUID | Libc.MS_NODEV | (options.ReadOnly ? Libc.MS_RDONLY : 0);
        if (Libc.mount(source, mountPoint, "fuse.fvd", flags, data) == 0) return new FuseMount(mountPoint, fd, false);

        int merr = Marshal.GetLastPInvokeError();
        Libc.close(fd);
        if (merr == Errno.EPERM && uid != 0) return MountWithFusermount(mountPoint, source, options);
        throw merr switch
        {
            Errno.ENOENT => new FvdException(FvdErrorKind.NotFound, "mountpoint does not exist", mountPoint),
            Errno.ENOTDIR => new FvdException(FvdErrorKind.InvalidArgument, "mountpoint is not a directory", mountPoint),
            Errno.EBUSY => new FvdException(FvdErrorKind.Busy, "mountpoint is busy", mountPoint),
            Errno.EPERM or Errno.EACCES => new FvdException(FvdErrorKind.PermissionDenied,
                $"mount failed: {Libc.StrError(merr)} (needs CAP_SYS_ADMIN)", mountPoint),
            _ => new FvdException(FvdErrorKind.Io, $"mount failed: {Libc.StrError(merr)}", mountPoint),
        };
    }

    /// <summary>
    /// The libfuse handshake: fusermount3 (setuid root) opens /dev/fuse, mounts it with fd=, rootmode=,
    /// user_id= and group_id= of its own, and sends the descriptor back with SCM_RIGHTS over the socket whose
    /// number it finds in _FUSE_COMMFD. It checks the options (allow_other only with user_allow_other in
    /// /etc/fuse.conf) and the mount point (the user must be able to write it).
    /// </summary>
    private static unsafe FuseMount MountWithFusermount(string mountPoint, string source, FuseOptions options)
    {
        var opts = new StringBuilder();
        // fsname and subtype are the only options fusermount3 unescapes ("\," and "\\").
        opts.Append("fsname=").Append(source.Replace("\\", "\\\\").Replace(",", "\\,"));
        opts.Append(",subtype=fvd,nosuid,nodev");
        opts.Append(CultureInfo.InvariantCulture, $",max_read={FuseProtocol.MaxWrite}");
        opts.Append(options.ReadOnly ? ",ro" : ",rw");
        if (options.EffectiveDefaultPermissions) opts.Append(",default_permissions");
        if (options.AllowOther) opts.Append(",allow_other");

        int* sv = stackalloc int[2];
        if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_STREAM, 0, sv) != 0)
            throw new FvdException(FvdErrorKind.Io, $"socketpair: {Libc.StrError(Marshal.GetLastPInvokeError())}");
        int ours = sv[0], theirs = sv[1]; // theirs is inherited by the helper (no close-on-exec); ours is not
        _ = Mono.Unix.Native.Syscall.fcntl(ours, Mono.Unix.Native.FcntlCommand.F_SETFD, 1 /* FD_CLOEXEC */);
        try
        {
            var psi = new ProcessStartInfo(FusermountProgram)
            {
                UseShellExecute = false,
                RedirectStandardError = true,
                RedirectStandardOutput = true,
            };
            foreach (var a in new[] { "-o", opts.ToString(), "--", mountPoint }) psi.ArgumentList.Add(a);
            psi.Environment["_FUSE_COMMFD"] = theirs.ToString(CultureInfo.InvariantCulture);
            Process proc;
            try { proc = Process.Start(psi)!; }
            catch (System.ComponentModel.Win32Exception e)
            {
                throw new FvdException(FvdErrorKind.PermissionDenied,
                    $"mount(2) is not permitted for this user and {FusermountProgram} cannot be run ({e.Message}; install fuse3)", mountPoint);
            }
            using (proc)
            {
                // Our copy of the helper's end must be closed, or a helper that fails would never be seen to hang up.
                Libc.close(theirs);
                theirs = -1;
                var stderr = proc.StandardError.ReadToEndAsync();
                var stdout = proc.StandardOutput.ReadToEndAsync();
                int fd = Libc.ReceiveFd(ours);
                proc.WaitForExit();
                string err = stderr.Result.Trim();
                _ = stdout.Result;
                if (fd >= 0)
                {
                    _ = Mono.Unix.Native.Syscall.fcntl(fd, Mono.Unix.Native.FcntlCommand.F_SETFD, 1 /* FD_CLOEXEC */);
                    return new FuseMount(mountPoint, fd, true);
                }
                throw FusermountError(err, proc.ExitCode, mountPoint);
            }
        }
        finally
        {
            Libc.close(ours);
            if (theirs >= 0) Libc.close(theirs);
        }
    }

    private static FvdException FusermountError(string stderr, int exitCode, string mountPoint)
    {
        if (stderr.Contains("user_allow_other", StringComparison.Ordinal))
            return new FvdException(FvdErrorKind.PermissionDenied,
                "-o allow_other needs 'user_allow_other' in /etc/fuse.conf for a mount by a user other than root");
        string first = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault()
                       ?? $"{FusermountProgram} exited with code {exitCode}";
        return new FvdException(FvdErrorKind.PermissionDenied, $"mount through {FusermountProgram} failed: {first}", mountPoint);
    }

    /// <summary>
    /// Unmounts: umount2(2) for our own mount(2), fusermount3 -u for a mount it made (it checks that this user
    /// made it). A busy mount is left alone unless <paramref name="lazy"/>, which detaches it.
    /// </summary>
    public UnmountResult Unmount(bool lazy)
    {
        if (ViaFusermount) return UnmountWithFusermount(lazy);
        if (Libc.umount2(MountPoint, 0) == 0) return UnmountResult.Unmounted;
        int err = Marshal.GetLastPInvokeError();
        if (err == Errno.EBUSY)
        {
            if (!lazy) return UnmountResult.Busy;
            if (Libc.umount2(MountPoint, Libc.MNT_DETACH) == 0) return UnmountResult.Detached;
            err = Marshal.GetLastPInvokeError();
        }
        if (err == Errno.EINVAL) return UnmountResult.NotMounted; // already gone
        throw new FvdException(FvdErrorKind.Io, $"unmount failed: {Libc.StrError(err)}", MountPoint);
    }

    private UnmountResult UnmountWithFusermount(bool lazy)
    {
        var (rc, err) = RunFusermount("-u", "--", MountPoint);
        if (rc == 0) return UnmountResult.Unmounted;
        // fusermount3 reports only text: "failed to unmount ...: Device or resource busy", "entry ... not found".
        if (err.Contains("busy", StringComparison.OrdinalIgnoreCase))
        {
            if (!lazy) return UnmountResult.Busy;
            (rc, err) = RunFusermount("-u", "-z", "--", MountPoint);
            if (rc == 0) return UnmountResult.Detached;
        }
        if (err.Contains("not found", StringComparison.Ordinal) || err.Contains("not mounted", StringComparison.Ordinal))
            return UnmountResult.NotMounted;
        throw new FvdException(FvdErrorKind.Io, $"unmount through {FusermountProgram} failed: {err.Trim()}", MountPoint);
    }

    private static (int Rc, string Err) RunFusermount(params string[] args)
    {
        var psi = new ProcessStartInfo(FusermountProgram) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        try
        {
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            _ = stdout.Result;
            return (p.ExitCode, err);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (-1, $"cannot run {FusermountProgram}: {e.Message}");
        }
    }
}
