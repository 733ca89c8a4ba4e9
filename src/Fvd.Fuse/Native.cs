// The libc calls .NET does not expose: raw read/write on /dev/fuse, mount(2), umount2(2), setsid, dup2.
using System.Runtime.InteropServices;

namespace Fvd.Fuse;

internal static unsafe partial class Native
{
    public const int O_RDONLY = 0, O_RDWR = 2, O_CLOEXEC = 0x80000;
    public const ulong MS_RDONLY = 1, MS_NOSUID = 2, MS_NODEV = 4;
    public const int MNT_DETACH = 2;

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags, int mode);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint read(int fd, byte* buf, nint count);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint write(int fd, byte* buf, nint count);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mount(string source, string target, string fstype, ulong flags, string data);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int setsid();

    [LibraryImport("libc", SetLastError = true)]
    public static partial int dup2(int oldfd, int newfd);

    [LibraryImport("libc")]
    public static partial uint geteuid();

    [LibraryImport("libc")]
    public static partial uint getegid();

    [LibraryImport("libc", SetLastError = true)]
    public static partial int prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    public const int PR_SET_IO_FLUSHER = 57;

    /// <summary>_IOW(229, 1, struct fuse_backing_map { s32 fd; u32 flags; u64 padding; })</summary>
    public const ulong FUSE_DEV_IOC_BACKING_OPEN = 0x4010E501;

    /// <summary>_IOR(229, 0, uint32_t): makes a fresh /dev/fuse descriptor a second queue of an existing session.</summary>
    public const ulong FUSE_DEV_IOC_CLONE = 0x8004E500;

    [LibraryImport("libc", SetLastError = true)]
    public static partial int ioctl(int fd, ulong request, void* arg);

    public static string StrError(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}
