// The one place where failures become errno values for the kernel.
using Fvd.Core;

namespace Fvd.Fuse;

public static class Errno
{
    public const int EPERM = 1, ENOTTY = 25, ENOENT = 2, EINTR = 4, EIO = 5, ENXIO = 6, EBADF = 9, EAGAIN = 11, EACCES = 13,
        EBUSY = 16, EEXIST = 17, E2BIG = 7, ERANGE = 34, ENODEV = 19, ENOTDIR = 20, EISDIR = 21, EINVAL = 22, EFBIG = 27, ENOSPC = 28, EROFS = 30,
        ENOSYS = 38, ENODATA = 61, EPROTO = 71, EOPNOTSUPP = 95;

    /// <summary>
    /// Maps an exception from a device to an errno. OutOfBounds is EINVAL, except for writes, where a range past
    /// the end of a block device is ENOSPC. Anything that is not an FvdException is a bug somewhere below us:
    /// EIO to the caller, the stack trace to stderr.
    /// </summary>
    public static int From(Exception e, bool writing = false)
    {
        if (e is FvdException f)
        {
            return f.Kind switch
            {
                FvdErrorKind.Io => EIO,
                FvdErrorKind.OutOfBounds => writing ? ENOSPC : EINVAL,
                FvdErrorKind.ReadOnly => EROFS,
                FvdErrorKind.NoSpace => ENOSPC,
                FvdErrorKind.NotSupported => EOPNOTSUPP,
                FvdErrorKind.UnsupportedFeature => EOPNOTSUPP,
                FvdErrorKind.PermissionDenied => EACCES,
                FvdErrorKind.InvalidArgument => EINVAL,
                FvdErrorKind.CorruptImage => EIO,
                FvdErrorKind.InvalidFormat => EIO,
                FvdErrorKind.NotFound => ENOENT,
                FvdErrorKind.Busy => EBUSY,
                FvdErrorKind.Interrupted => EINTR,
                _ => EIO,
            };
        }
        Console.Error.WriteLine($"fvdmount: internal error, answering EIO: {e}");
        return EIO;
    }
}
