// The one libc interop file of the project: the calls neither .NET nor Mono.Unix provides with the flags and
// layouts needed here — fdatasync and positional I/O on raw pointers, fallocate modes, lseek SEEK_DATA /
// SEEK_HOLE, flock, fcntl open-file-description locks, poll, mount(2) / umount2(2), FUSE ioctls, prctl, and socketpair / recvmsg for the /dev/fuse
// descriptor fusermount3 passes back. Everything Mono.Unix.Native.Syscall has (user ids, setsid, dup2, mkfifo,
// fsync, kill) is called there instead. Linux only; constants are the x86-64 / arm64 generic values.
using System.Runtime.InteropServices;

namespace Fvd.Core.Io;

internal static unsafe partial class Libc
{
    public const int FALLOC_FL_KEEP_SIZE = 0x01;
    public const int FALLOC_FL_PUNCH_HOLE = 0x02;
    public const int FALLOC_FL_ZERO_RANGE = 0x10;
    public const int SEEK_DATA = 3;
    public const int SEEK_HOLE = 4;
    public const int LOCK_EX = 2;
    public const int LOCK_SH = 1;
    public const int LOCK_NB = 4;
    public const int LOCK_UN = 8;

    public const int O_RDONLY = 0;
    public const int O_WRONLY = 1;
    public const int O_RDWR = 2;
    public const int O_CREAT = 0x40;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;
    public const int O_EXCL = 0x80;
    public static int O_DIRECT => RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? 0x10000 : 0x4000;

    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int EINTR = 4;
    public const int ENXIO = 6;
    public const int EWOULDBLOCK = 11;
    public const int EACCES = 13;
    public const int EISDIR = 21;
    public const int EINVAL = 22;
    public const int ENOSPC = 28;
    public const int EROFS = 30;
    public const int ENOSYS = 38;
    public const int EOPNOTSUPP = 95;
    public const int EEXIST = 17;

    // fcntl(2) open-file-description locks (Linux 3.15+), and the struct flock l_type values.
    public const int F_OFD_GETLK = 36;
    public const int F_OFD_SETLK = 37;
    public const short F_RDLCK = 0;
    public const short F_WRLCK = 1;
    public const short F_UNLCK = 2;
    public const short SEEK_SET = 0;

    /// <summary>struct flock as Linux lays it out on 64-bit targets (off_t is 64 bits).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Flock
    {
        public short Type;
        public short Whence;
        public long Start;
        public long Len;
        public int Pid;
    }

    public const ulong MS_RDONLY = 1, MS_NOSUID = 2, MS_NODEV = 4;
    public const int MNT_DETACH = 2;
    public const int PR_SET_IO_FLUSHER = 57;

    /// <summary>_IOW(229, 1, struct fuse_backing_map { s32 fd; u32 flags; u64 padding; })</summary>
    public const ulong FUSE_DEV_IOC_BACKING_OPEN = 0x4010E501;

    /// <summary>_IOR(229, 0, uint32_t): makes a fresh /dev/fuse descriptor a second queue of an existing session.</summary>
    public const ulong FUSE_DEV_IOC_CLONE = 0x8004E500;

    public const int AF_UNIX = 1, SOCK_STREAM = 1, SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1, SCM_RIGHTS = 1;

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fdatasync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fallocate(int fd, int mode, long offset, long len);

    [LibraryImport("libc", SetLastError = true)]
    public static partial long lseek(int fd, long offset, int whence);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int flock(int fd, int operation);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags, int mode);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fcntl(int fd, int cmd, ref Flock lk);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint read(int fd, byte* buf, nint count);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint write(int fd, byte* buf, nint count);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint pread(int fd, byte* buf, nuint count, long offset);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint pwrite(int fd, byte* buf, nuint count, long offset);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mount(string source, string target, string fstype, ulong flags, string data);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int ioctl(int fd, ulong request, void* arg);

    public const short POLLERR = 0x8, POLLHUP = 0x10, POLLNVAL = 0x20;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport("libc", SetLastError = true)]
    public static partial int poll(PollFd* fds, nuint count, int timeoutMs);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int socketpair(int domain, int type, int protocol, int* sv);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint recvmsg(int sockfd, MsgHdr* msg, int flags);

    // struct msghdr and struct cmsghdr of the LP64 ABI (x86-64, arm64).
    [StructLayout(LayoutKind.Sequential)]
    private struct MsgHdr
    {
        public void* Name;
        public uint NameLen;
        public IoVec* Iov;
        public nuint IovLen;
        public void* Control;
        public nuint ControlLen;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVec
    {
        public void* Base;
        public nuint Len;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct CmsgHdr
    {
        public nuint Len;
        public int Level;
        public int Type;
    }

    /// <summary>
    /// Receives one file descriptor sent with SCM_RIGHTS over a stream socket (with at least one data byte).
    /// Returns the descriptor, -1 when the peer closed without sending one, or -errno.
    /// </summary>
    public static int ReceiveFd(int socket)
    {
        byte data;
        var iov = new IoVec { Base = &data, Len = 1 };
        int controlLen = sizeof(CmsgHdr) + 8; // CMSG_SPACE(sizeof(int)): header + int padded to 8
        byte* control = stackalloc byte[controlLen];
        new Span<byte>(control, controlLen).Clear();
        var msg = new MsgHdr { Iov = &iov, IovLen = 1, Control = control, ControlLen = (nuint)controlLen };
        nint n;
        do n = recvmsg(socket, &msg, 0);
        while (n < 0 && Marshal.GetLastPInvokeError() == EINTR);
        if (n < 0) return -Marshal.GetLastPInvokeError();
        if (n == 0 || msg.ControlLen < (nuint)sizeof(CmsgHdr)) return -1;
        var h = (CmsgHdr*)control;
        if (h->Level != SOL_SOCKET || h->Type != SCM_RIGHTS || h->Len < (nuint)(sizeof(CmsgHdr) + sizeof(int))) return -1;
        return *(int*)(control + sizeof(CmsgHdr));
    }

    public static string StrError(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    /// <summary>An IOException for the last failed call, naming the call and the path.</summary>
    public static IOException Error(string what, string path)
    {
        int errno = Marshal.GetLastPInvokeError();
        return new IOException($"{what} {path}: {StrError(errno)} (errno {errno})") { HResult = errno };
    }
}
