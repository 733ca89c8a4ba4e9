// The few libc calls .NET does not expose: fdatasync, fallocate modes, lseek SEEK_DATA/SEEK_HOLE, flock,
// open with O_CREAT (without .NET's implicit flock) and fcntl's open-file-description locks.
// (Mono.Posix covers some of these but not the fallocate modes or SEEK_DATA; one small import keeps the
// core library free of that dependency.)
using System.Runtime.InteropServices;

namespace Fvd.Core.Io;

internal static partial class Libc
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
    public const int O_RDWR = 2;
    public const int O_CLOEXEC = 0x80000;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;

    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int EACCES = 13;
    public const int EISDIR = 21;
    public const int EROFS = 30;
    public const int ENXIO = 6;
    public const int ENOSPC = 28;
    public const int EOPNOTSUPP = 95;
    public const int EINTR = 4;
    public const int EWOULDBLOCK = 11;
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

    public static string StrError(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}
