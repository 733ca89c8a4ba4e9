// Threads for the requests that may wait on a slow backing (a template over HTTP can take minutes to answer
// or fail). The /dev/fuse reader threads hand those over and go back to reading, so local reads, writes and
// FSYNC never queue behind them however slow the backing is; an INTERRUPT read meanwhile cancels one.
using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;

namespace Fvd.Fuse;

/// <summary>Sends one complete reply to the kernel (a write(2) on /dev/fuse).</summary>
public delegate void ReplySink(ReadOnlySpan<byte> reply);

public sealed class BackingWorkers : IDisposable
{
    private readonly FuseDispatcher _dispatcher;
    private readonly ReplySink _send;
    // Not bounded here: the kernel bounds what is outstanding (max_background plus one per waiting caller).
    private readonly BlockingCollection<(byte[] Buffer, int Length)> _queue = [];
    private readonly Thread[] _threads;
    private int _disposed;

    public BackingWorkers(FuseDispatcher dispatcher, int count, ReplySink send)
    {
        ArgumentNullException.ThrowIfNull(dispatcher);
        ArgumentNullException.ThrowIfNull(send);
        _dispatcher = dispatcher;
        _send = send;
        _threads = new Thread[Math.Clamp(count, 1, 64)];
        for (int i = 0; i < _threads.Length; i++)
        {
            _threads[i] = new Thread(Run) { IsBackground = true, Name = $"fuse-backing-{i}" };
            _threads[i].Start();
        }
    }

    /// <summary>
    /// Takes the request if it may wait on the backing (copied; the caller's buffer is free again) and
    /// returns true; false: the caller serves it itself. Never throws.
    /// </summary>
    public bool TryTake(ReadOnlySpan<byte> request)
    {
        if (_queue.IsAddingCompleted || !_dispatcher.MayWaitOnBacking(request)) return false;
        ulong unique = BinaryPrimitives.ReadUInt64LittleEndian(request[FuseProtocol.InHeader.Unique..]);
        if (!_dispatcher.TrackInterruptible(unique))
        {
            // Its INTERRUPT overtook it: answer at once, do nothing.
            Span<byte> eintr = stackalloc byte[FuseProtocol.OutHeaderSize];
            Send(eintr[..FuseDispatcher.Error(eintr, unique, Errno.EINTR)]);
            return true;
        }
        var buffer = ArrayPool<byte>.Shared.Rent(request.Length);
        request.CopyTo(buffer);
        try
        {
            _queue.Add((buffer, request.Length));
            return true;
        }
        catch (InvalidOperationException)
        {
            // Stopping meanwhile: the caller answers it rather than drop it.
            _dispatcher.ForgetInterruptible(unique);
            ArrayPool<byte>.Shared.Return(buffer);
            return false;
        }
    }

    private void Run()
    {
        var reply = GC.AllocateUninitializedArray<byte>(FuseProtocol.BufferSize, pinned: true);
        foreach (var (buffer, length) in _queue.GetConsumingEnumerable())
        {
            int n;
            try { n = _dispatcher.HandleInterruptible(buffer.AsSpan(0, length), reply); }
            finally { ArrayPool<byte>.Shared.Return(buffer); }
            if (n > 0) Send(reply.AsSpan(0, n));
        }
    }

    private void Send(ReadOnlySpan<byte> reply)
    {
        try { _send(reply); }
        catch (Exception e) { Console.Error.WriteLine($"fvdmount: internal error sending a reply: {e}"); }
    }

    /// <summary>Interrupts what is in flight, answers what is queued, waits for the threads.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _queue.CompleteAdding();
        _dispatcher.InterruptAll();
        foreach (var t in _threads) t.Join();
        _queue.Dispose();
    }
}
