// The transport: the /dev/fuse descriptor, the request threads and the stop signals (mounting: FuseMount.cs).
// Everything protocol-specific is in FuseDispatcher.
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Fvd.Core;
using Native = Fvd.Core.Io.Libc;

namespace Fvd.Fuse;

/// <summary>Result of an unmount attempt.</summary>
public enum UnmountResult
{
    Unmounted,
    /// <summary>A file in the mount is still open; nothing changed.</summary>
    Busy,
    /// <summary>Detached lazily; the server exits when the last user closes.</summary>
    Detached,
    /// <summary>Not mounted (any more).</summary>
    NotMounted,
}

public sealed class FuseServer : IDisposable
{
    private readonly FuseOptions _options;
    private readonly Thread[] _threads;
    private readonly ManualResetEventSlim _exited = new(false);
    private readonly object _unmountLock = new();
    private int _fd;
    // The descriptor each request thread reads; [0] is _fd, the others are clones of it or _fd itself.
    private readonly int[] _fds;
    private int _running;
    private BackingWorkers? _backingWorkers;
    private volatile bool _mounted;
    private FuseMount? _mount;

    private FuseServer(string mountPoint, int fd, FuseDispatcher dispatcher, FuseOptions options)
    {
        MountPoint = mountPoint;
        _fd = fd;
        Dispatcher = dispatcher;
        _options = options;
        _threads = new Thread[Math.Clamp(options.Threads, 1, 64)];
        _fds = new int[_threads.Length];
        Array.Fill(_fds, fd);
    }

    public string MountPoint { get; }
    public FuseDispatcher Dispatcher { get; }

    /// <summary>
    /// Called once, on the thread that first sees the connection end (umount, from us or from outside),
    /// before the request threads are joined: fvdmount marks its images closing there, so a command
    /// run right after umount waits for the final flush instead of finding the image in use.
    /// </summary>
    public Action? ConnectionEnded { get; set; }
    private int _endReported;

    /// <summary>True once every request thread has stopped (the connection is gone).</summary>
    public bool HasExited => _exited.IsSet;

    /// <summary>
    /// Opens /dev/fuse, mounts it at <paramref name="mountPoint"/> (type fuse.fvd, source <paramref name="source"/>),
    /// starts the request threads and returns once the kernel's INIT has been answered. The caller keeps
    /// ownership of the devices. Errors are FvdExceptions with a message a user can act on.
    /// </summary>
    public static FuseServer Mount(string mountPoint, string source, IReadOnlyList<FuseImage> images, FuseOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        mountPoint = Path.GetFullPath(mountPoint);
        var dispatcher = new FuseDispatcher(images, options);
        var mount = FuseMount.Mount(mountPoint, source, options);
        int fd = mount.Fd;

        // Loop devices on FUSE can deadlock in memory reclaim; this flag helps where allowed (CAP_SYS_RESOURCE).
        _ = Native.prctl(Native.PR_SET_IO_FLUSHER, 1, 0, 0, 0);

        var server = new FuseServer(mountPoint, fd, dispatcher, options) { _mount = mount, _mounted = true };
        dispatcher.BackingOpen = server.RegisterBacking;
        server.Start();
        // Also stop waiting if the connection ends first (unmounted from outside before INIT arrived).
        int which = WaitHandle.WaitAny([dispatcher.InitDone, server._exited.WaitHandle], TimeSpan.FromSeconds(30));
        if (!dispatcher.Initialized)
        {
            server.Dispose();
            throw new FvdException(FvdErrorKind.Io, which == 1
                ? "unmounted before the kernel finished FUSE INIT"
                : "the kernel did not complete FUSE INIT", mountPoint);
        }
        return server;
    }

    /// <summary>
    /// FUSE_DEV_IOC_BACKING_OPEN: hands the kernel a file to serve passthrough opens from. Returns the backing id
    /// or -errno. Only valid after the INIT reply (before it the kernel answers EPERM). The kernel keeps its own
    /// reference to the file, so our descriptor is closed right away; the id lives until /dev/fuse is closed.
    /// </summary>
    internal unsafe int RegisterBacking(string path, bool readOnly)
    {
        int fuseFd = Volatile.Read(ref _fd);
        if (fuseFd < 0) return -Errno.ENODEV;
        int fd = Native.open(path, (readOnly ? Native.O_RDONLY : Native.O_RDWR) | Native.O_CLOEXEC, 0);
        if (fd < 0) return -Marshal.GetLastPInvokeError();
        try
        {
            byte* map = stackalloc byte[16];
            new Span<byte>(map, 16).Clear();
            *(int*)map = fd;
            int id = Native.ioctl(fuseFd, Native.FUSE_DEV_IOC_BACKING_OPEN, map);
            return id > 0 ? id : id == 0 ? -Errno.EINVAL : -Marshal.GetLastPInvokeError();
        }
        finally
        {
            Native.close(fd);
        }
    }

    private void Start()
    {
        _backingWorkers = new BackingWorkers(Dispatcher, _options.BackingThreads > 0 ? _options.BackingThreads : _threads.Length, SendReply);
        if (_options.CloneFd) CloneFds();
        _running = _threads.Length;
        for (int i = 0; i < _threads.Length; i++)
        {
            int fd = _fds[i];
            _threads[i] = new Thread(() => RequestLoop(fd)) { IsBackground = true, Name = $"fuse-{i}" };
            _threads[i].Start();
        }
        new Thread(WatchConnection) { IsBackground = true, Name = "fuse-watch" }.Start();
    }

    /// <summary>
    /// Reports the end of the connection as soon as the kernel aborts it, even while every request thread is
    /// still busy with a write the abort left behind: poll with no events asked for returns only with
    /// POLLERR, which /dev/fuse reports once the connection is gone.
    /// </summary>
    private unsafe void WatchConnection()
    {
        var pfd = new Native.PollFd { Fd = _fd, Events = 0 };
        while (pfd.Fd >= 0)
        {
            int r = Native.poll(&pfd, 1, -1);
            if (r < 0 && Marshal.GetLastPInvokeError() == Errno.EINTR) continue;
            if (r < 0 || (pfd.Revents & (Native.POLLERR | Native.POLLHUP | Native.POLLNVAL)) != 0) break;
        }
        ReportConnectionEnded();
    }

    private void ReportConnectionEnded()
    {
        if (Interlocked.Exchange(ref _endReported, 1) != 0) return;
        try { ConnectionEnded?.Invoke(); }
        catch (Exception e) { Console.Error.WriteLine($"fvdmount: internal error: {e.Message}"); }
    }

    /// <summary>
    /// Gives every request thread after the first its own /dev/fuse descriptor (FUSE_DEV_IOC_CLONE), so the
    /// threads do not queue on one file. A thread whose clone fails reads the shared descriptor.
    /// </summary>
    private unsafe void CloneFds()
    {
        int master = _fd, cloned = 0;
        for (int i = 1; i < _fds.Length; i++)
        {
            int fd = Native.open("/dev/fuse", Native.O_RDWR | Native.O_CLOEXEC, 0);
            if (fd < 0) break;
            if (Native.ioctl(fd, Native.FUSE_DEV_IOC_CLONE, &master) != 0)
            {
                int err = Marshal.GetLastPInvokeError();
                Native.close(fd);
                if (_options.Debug) Console.Error.WriteLine($"fvdmount: FUSE_DEV_IOC_CLONE: {Native.StrError(err)}; sharing one /dev/fuse descriptor");
                break;
            }
            _fds[i] = fd;
            cloned++;
        }
        Dispatcher.DeviceFds = 1 + cloned;
    }

    private unsafe void RequestLoop(int fd)
    {
        // Per-thread pinned buffers, allocated once: nothing is allocated per request.
        var req = GC.AllocateUninitializedArray<byte>(FuseProtocol.BufferSize, pinned: true);
        var rep = GC.AllocateUninitializedArray<byte>(FuseProtocol.BufferSize, pinned: true);
        try
        {
            fixed (byte* rp = req, wp = rep)
            {
                while (true)
                {
                    nint n = Native.read(fd, rp, req.Length);
                    if (n <= 0)
                    {
                        int err = n == 0 ? Errno.ENODEV : Marshal.GetLastPInvokeError();
                        // EINTR: the runtime signals its threads; ENOENT: the request was interrupted; EAGAIN: spurious.
                        if (err is Errno.EINTR or Errno.EAGAIN or Errno.ENOENT) continue;
                        if (err != Errno.ENODEV) Console.Error.WriteLine($"fvdmount: reading /dev/fuse: {Native.StrError(err)}");
                        ReportConnectionEnded();
                        return; // ENODEV: unmounted (by us or from outside)
                    }
                    long t0 = Stopwatch.GetTimestamp();
                    var request = new ReadOnlySpan<byte>(rp, (int)n);
                    // Requests that may wait on a slow backing go to the backing workers: this thread keeps
                    // serving local I/O, FSYNC and INTERRUPT.
                    if (_backingWorkers!.TryTake(request)) continue;
                    int len;
                    try { len = Dispatcher.Handle(request, rep); }
                    catch (Exception e) { Console.Error.WriteLine($"fvdmount: internal error: {e}"); continue; }
                    if (len > 0) Send(fd, wp, len);
                    Dispatcher.Stats.Record(n >= 8 ? *(uint*)(rp + FuseProtocol.InHeader.Opcode) : 0, Stopwatch.GetTimestamp() - t0);
                }
            }
        }
        finally
        {
            if (Interlocked.Decrement(ref _running) == 0)
            {
                // The connection is gone: requests still waiting on the backing are interrupted, then joined.
                _backingWorkers?.Dispose();
                _mounted = false;
                _exited.Set();
            }
        }
    }

    private unsafe void SendReply(ReadOnlySpan<byte> reply)
    {
        fixed (byte* p = reply) Send(_fds[0], p, reply.Length);
    }

    /// <summary>
    /// One reply, one write(2); safe from any thread (the kernel takes each write whole). The kernel finds the
    /// request only on the descriptor that read it, so a reply built elsewhere (a backing worker, the EINTR an
    /// INTERRUPT answers for its target) that gets ENOENT is offered to the other cloned descriptors.
    /// </summary>
    private unsafe void Send(int fd, byte* reply, int len)
    {
        int err = Write(fd, reply, len);
        if (err == Errno.ENOENT)
        {
            foreach (int other in _fds)
            {
                if (other == fd) continue;
                err = Write(other, reply, len);
                if (err != Errno.ENOENT) break;
            }
        }
        // ENOENT: the request was interrupted or aborted meanwhile; nobody waits for the answer.
        if (err is not 0 and not Errno.ENOENT and not Errno.ENODEV)
            Console.Error.WriteLine($"fvdmount: writing reply: {Native.StrError(err)}");
    }

    private static unsafe int Write(int fd, byte* reply, int len)
    {
        while (Native.write(fd, reply, len) < 0)
        {
            int err = Marshal.GetLastPInvokeError();
            if (err != Errno.EINTR) return err;
        }
        return 0;
    }

    /// <summary>
    /// Unmounts. A busy mount (a file still open) is left alone unless <paramref name="lazy"/>, which detaches it
    /// from the namespace; the connection then ends when the last user closes. The request threads see ENODEV
    /// and stop after finishing what they were doing.
    /// </summary>
    public UnmountResult Unmount(bool lazy)
    {
        lock (_unmountLock)
        {
            if (!_mounted || _exited.IsSet) return UnmountResult.NotMounted;
            var result = _mount!.Unmount(lazy);
            if (result != UnmountResult.Busy) _mounted = false;
            return result;
        }
    }

    /// <summary>Blocks until every request thread has stopped: all requests in flight have been answered.</summary>
    public void WaitForExit() => _exited.Wait();

    public bool WaitForExit(TimeSpan timeout) => _exited.Wait(timeout);

    /// <summary>
    /// Serves until the mount goes away: SIGTERM/SIGINT/SIGHUP call RequestStop; an external umount ends it the
    /// same way. After the request threads have drained, calls <paramref name="onShutdown"/> (flush and close
    /// the images there) and returns 0. Callers that must catch signals before the mount exists register their
    /// own handlers, call RequestStop from them and use WaitAndShutdown instead.
    /// </summary>
    public int RunUntilStopped(Action? onShutdown)
    {
        using var signals = Fvd.Fuse.StopSignals.Watch(RequestStop);
        return WaitAndShutdown(onShutdown);
    }

    /// <summary>Waits until every request thread has stopped, closes /dev/fuse, then calls onShutdown. Returns 0.</summary>
    public int WaitAndShutdown(Action? onShutdown)
    {
        WaitForExit();
        CloseFd();
        onShutdown?.Invoke();
        return 0;
    }

    /// <summary>
    /// Unmounts on request (a stop signal). A busy mount is reported on stderr and kept serving, or detached
    /// lazily when LazyUnmount is set. Never throws.
    /// </summary>
    public void RequestStop()
    {
        try
        {
            switch (Unmount(_options.LazyUnmount))
            {
                case UnmountResult.Busy:
                    Console.Error.WriteLine($"fvdmount: {MountPoint} is busy (a file in it is still open), still serving. " +
                                            $"Stop its users (qemu, losetup -d) and signal again, or run 'umount -l {MountPoint}'.");
                    break;
                case UnmountResult.Detached:
                    Console.Error.WriteLine($"fvdmount: {MountPoint} was busy and is detached; exiting when its last user closes it.");
                    break;
                default:
                    if (_options.Debug) Console.Error.WriteLine($"fvdmount: unmounted {MountPoint}");
                    break;
            }
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"fvdmount: {e.Message}");
        }
    }

    private void CloseFd()
    {
        int fd = Interlocked.Exchange(ref _fd, -1);
        if (fd < 0) return;
        for (int i = 0; i < _fds.Length; i++)
        {
            if (_fds[i] != fd) Native.close(_fds[i]);
            _fds[i] = -1; // a late reply gets EBADF, never a reused descriptor number
        }
        Native.close(fd);
    }

    /// <summary>Unmounts (lazily if busy), waits briefly for the threads, closes the device.</summary>
    public void Dispose()
    {
        try { Unmount(lazy: true); }
        catch (FvdException e) { Console.Error.WriteLine($"fvdmount: {e.OneLine}"); }
        // Closing the fd while a thread still blocks in read() would not wake it, so only close once they stopped.
        if (_threads[0] is null || WaitForExit(TimeSpan.FromSeconds(10))) CloseFd();
        _exited.Set();
    }
}
