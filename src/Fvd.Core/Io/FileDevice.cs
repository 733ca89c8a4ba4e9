// A host file as a device: positional I/O on one SafeFileHandle shared by all threads (RandomAccess), so
// there is no seek state to race on. Holes are made with fallocate and found with SEEK_DATA/SEEK_HOLE.
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Fvd.Core.Io;

public sealed class FileDevice : IBlockDevice
{
    private readonly SafeFileHandle _handle;
    private readonly int _fd;
    private long _length;
    private bool _locked;

    public string Path { get; }
    public bool IsReadOnly { get; }
    public long Length => Volatile.Read(ref _length);

    private FileDevice(string path, SafeFileHandle handle, bool readOnly)
    {
        Path = path;
        _handle = handle;
        _fd = (int)handle.DangerousGetHandle();
        IsReadOnly = readOnly;
        _length = RandomAccess.GetLength(handle);
    }

    /// <summary>Opens an existing file. The error names the path and says what is wrong.</summary>
    /// <remarks>
    /// Opens with open(2) directly: .NET's File.OpenHandle takes an implicit flock(LOCK_SH), which fails
    /// against the image's own LOCK_EX with a generic IOException (so a second writer got Io instead of Busy,
    /// and a NoLock inspection could not open a locked image at all). Locking is explicit: see Lock.
    /// </remarks>
    public static FileDevice Open(string path, bool readOnly)
    {
        if (Directory.Exists(path))
            throw new FvdException(FvdErrorKind.InvalidArgument, "cannot open: is a directory", path);
        // open(2) of a FIFO for reading blocks until a writer appears; a socket cannot be opened at all.
        if (FileKinds.Of(path) is FileKind.Fifo or FileKind.Socket)
            throw new FvdException(FvdErrorKind.PermissionDenied, $"cannot open: is a {FileKinds.Of(path).ToString().ToLowerInvariant()}, not a regular file", path);
        int fd = Libc.open(path, (readOnly ? Libc.O_RDONLY : Libc.O_RDWR) | Libc.O_CLOEXEC, 0);
        if (fd < 0) throw OpenError(path, "cannot open");
        var h = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            return new FileDevice(path, h, readOnly);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            h.Dispose();
            throw FvdException.FromIo(e, path, "cannot open");
        }
    }

    private static FvdException OpenError(string path, string what)
    {
        int err = Marshal.GetLastPInvokeError();
        var kind = err switch
        {
            Libc.ENOENT => FvdErrorKind.NotFound,
            Libc.EACCES or Libc.EPERM or Libc.EROFS => FvdErrorKind.PermissionDenied,
            Libc.EISDIR or Libc.EEXIST => FvdErrorKind.InvalidArgument,
            Libc.ENOSPC => FvdErrorKind.NoSpace,
            _ => FvdErrorKind.Io,
        };
        return new FvdException(kind, $"{what}: {Libc.StrError(err)}", path);
    }

    /// <summary>Creates (or truncates) a file of the given length; the new file is sparse.</summary>
    /// <remarks>
    /// The file is locked exclusively before it is truncated, and stays locked until disposed: a file some
    /// process has open as an image, as its data file or as a backing (all locked) is never cut short.
    /// </remarks>
    public static FileDevice Create(string path, long length, bool overwrite = false)
    {
        if (Directory.Exists(path))
            throw new FvdException(FvdErrorKind.InvalidArgument, "cannot create: is a directory", path);
        int fd = Libc.open(path, Libc.O_RDWR | Libc.O_CREAT | Libc.O_CLOEXEC | (overwrite ? 0 : Libc.O_EXCL), 0x1B6 /* 0666 & ~umask */);
        if (fd < 0) throw OpenError(path, "cannot create");
        var h = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            if (Libc.flock(fd, Libc.LOCK_EX | Libc.LOCK_NB) != 0)
            {
                int err = Marshal.GetLastPInvokeError();
                throw err == Libc.EWOULDBLOCK
                    ? new FvdException(FvdErrorKind.Busy, "cannot create: the file is in use by another process (locked)", path)
                    : new FvdException(FvdErrorKind.Io, $"cannot create: flock failed: {Libc.StrError(err)}", path);
            }
            RandomAccess.SetLength(h, 0);
            RandomAccess.SetLength(h, length);
            return new FileDevice(path, h, false) { _locked = true };
        }
        // SetLength throws ArgumentOutOfRangeException for EFBIG ("too large for the file system").
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentOutOfRangeException)
        {
            h.Dispose();
            throw FvdException.FromIo(e, path, "cannot create");
        }
        catch
        {
            h.Dispose();
            throw;
        }
    }

    public int Fd => _fd;

    /// <summary>
    /// Treats the device as length bytes long without changing the file: bytes past the file's end read as
    /// zeros (see Read) and the file grows when written there.
    /// </summary>
    public void AssumeLength(long length) => Volatile.Write(ref _length, length);

    public void Read(long offset, Span<byte> buffer)
    {
        DeviceChecks.Range(this, offset, buffer.Length, Path);
        // RandomAccess.Read may return short counts; loop until the range is filled.
        while (!buffer.IsEmpty)
        {
            int n;
            try { n = RandomAccess.Read(_handle, buffer, offset); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw FvdException.FromIo(e, Path, "read failed"); }
            if (n == 0)
            {
                // The file shrank under us (or is shorter than its recorded length): the rest reads as zeros.
                buffer.Clear();
                return;
            }
            buffer = buffer[n..];
            offset += n;
        }
    }

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        DeviceChecks.Writable(this, Path);
        DeviceChecks.Range(this, offset, buffer.Length, Path);
        try { RandomAccess.Write(_handle, buffer, offset); } // loops on short writes internally
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw FvdException.FromIo(e, Path, "write failed"); }
    }

    public void Flush()
    {
        if (IsReadOnly) return;
        if (Libc.fdatasync(_fd) != 0) throw Errno("fdatasync failed");
    }

    /// <summary>Grows or shrinks the file (metadata-file growth, tests).</summary>
    public void SetLength(long length)
    {
        DeviceChecks.Writable(this, Path);
        try { RandomAccess.SetLength(_handle, length); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentOutOfRangeException) { throw FvdException.FromIo(e, Path, "resize failed"); }
        Volatile.Write(ref _length, length);
    }

    public void Discard(long offset, long length)
    {
        DeviceChecks.Writable(this, Path);
        DeviceChecks.Range(this, offset, length, Path);
        if (length == 0) return;
        if (Libc.fallocate(_fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, offset, length) == 0) return;
        int err = Marshal.GetLastPInvokeError();
        if (err != Libc.EOPNOTSUPP) throw Errno("punch hole failed", err);
        DeviceChecks.WriteZeroesByWrites(this, offset, length);
    }

    public void WriteZeroes(long offset, long length)
    {
        DeviceChecks.Writable(this, Path);
        DeviceChecks.Range(this, offset, length, Path);
        if (length == 0) return;
        if (Libc.fallocate(_fd, Libc.FALLOC_FL_ZERO_RANGE | Libc.FALLOC_FL_KEEP_SIZE, offset, length) == 0) return;
        int err = Marshal.GetLastPInvokeError();
        if (err != Libc.EOPNOTSUPP) throw Errno("zero range failed", err);
        // Punching also reads back as zeros, and costs no space.
        if (Libc.fallocate(_fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, offset, length) == 0) return;
        DeviceChecks.WriteZeroesByWrites(this, offset, length);
    }

    public Extent GetExtent(long offset, long maxLength)
    {
        DeviceChecks.Range(this, offset, 1, Path);
        long limit = offset + Math.Min(maxLength, Length - offset); // no overflow for maxLength = long.MaxValue
        long data = Libc.lseek(_fd, offset, Libc.SEEK_DATA);
        if (data < 0)
        {
            int err = Marshal.GetLastPInvokeError();
            if (err == Libc.ENXIO) return new Extent(ExtentKind.Zero, offset, limit - offset); // hole to EOF
            return new Extent(ExtentKind.Data, offset, limit - offset); // cannot tell
        }
        if (data > offset) return new Extent(ExtentKind.Zero, offset, Math.Min(data, limit) - offset);
        long hole = Libc.lseek(_fd, offset, Libc.SEEK_HOLE);
        if (hole < 0) hole = limit;
        return new Extent(ExtentKind.Data, offset, Math.Min(hole, limit) - offset);
    }

    /// <summary>The file's device and inode (fstat of the open descriptor).</summary>
    public FileIdentity Identity => FileIdentity.OfFd(_fd, Path);

    /// <summary>
    /// Takes an advisory lock so two writers cannot open one image; shared for readers. A lock held by a
    /// process that is closing this file or exiting is waited for, up to wait.Timeout (see LockWait.cs).
    /// </summary>
    public void Lock(bool exclusive, LockWait? wait = null)
    {
        int op = (exclusive ? Libc.LOCK_EX : Libc.LOCK_SH) | Libc.LOCK_NB;
        LockHolders.Wait(Identity, exclusive, wait ?? LockWait.None,
            tryLock: () =>
            {
                if (Libc.flock(_fd, op) == 0) return _locked = true;
                int err = Marshal.GetLastPInvokeError();
                return err == Libc.EWOULDBLOCK ? false : throw Errno("flock failed", err);
            },
            closingMarked: ClosingMarked,
            refuse: (pid, timedOut) => new FvdException(FvdErrorKind.Busy, timedOut
                ? $"image is in use by another process (locked); process {pid} was still closing it after {(wait ?? LockWait.None).Timeout.TotalSeconds:0} s"
                : "image is in use by another process (locked)", Path),
            Path);
    }

    /// <summary>A byte far past any end of file, for the closing marker; locks there never meet I/O.</summary>
    internal const long ClosingMarkerOffset = 1L << 62;

    /// <summary>
    /// Marks this open file as closing: an open-file-description read lock on ClosingMarkerOffset, which
    /// stays until the descriptor is closed. A waiter on the flock sees it with F_OFD_GETLK. Best effort: a
    /// file system without byte-range locks only loses the wait.
    /// </summary>
    public void MarkClosing()
    {
        if (_handle.IsClosed) return;
        var lk = new Libc.Flock { Type = Libc.F_RDLCK, Whence = Libc.SEEK_SET, Start = ClosingMarkerOffset, Len = 1 };
        _ = Libc.fcntl(_fd, Libc.F_OFD_SETLK, ref lk);
    }

    /// <summary>True when another open of this file has called MarkClosing and not yet closed.</summary>
    public bool ClosingMarked()
    {
        var lk = new Libc.Flock { Type = Libc.F_WRLCK, Whence = Libc.SEEK_SET, Start = ClosingMarkerOffset, Len = 1 };
        return Libc.fcntl(_fd, Libc.F_OFD_GETLK, ref lk) == 0 && lk.Type != Libc.F_UNLCK;
    }

    private FvdException Errno(string what, int err = -1)
    {
        if (err < 0) err = Marshal.GetLastPInvokeError();
        var kind = err == Libc.ENOSPC ? FvdErrorKind.NoSpace : FvdErrorKind.Io;
        return new FvdException(kind, $"{what}: {Libc.StrError(err)}", Path);
    }

    /// <summary>
    /// Unlocks before closing: a child forked by any thread of this process shares the open file description
    /// (and its flock) until it execs, so closing alone can leave the image locked for a moment.
    /// </summary>
    public void Dispose()
    {
        if (_locked && !_handle.IsClosed)
        {
            Libc.flock(_fd, Libc.LOCK_UN);
            _locked = false;
        }
        _handle.Dispose();
    }
}
