// Requests that may wait on a slow backing, and FUSE_INTERRUPT. Such a request is tracked by its unique id
// from the moment a reader thread hands it to a backing worker until its reply is built. An INTERRUPT for a
// request still queued answers it EINTR at once (the worker then drops it); for one running, it cancels its
// token, which the backing read sees through IoCancellation, and the request answers EINTR. One reply each.
// Every backing read of a request happens before its first data write (src/Fvd.Core/Image/CopyOnWrite.cs), so an
// interrupted request has changed nothing.
using Fvd.Core.Io;
using static Fvd.Fuse.FuseProtocol;

namespace Fvd.Fuse;

public sealed partial class FuseDispatcher
{
    private sealed class Tracked
    {
        public readonly CancellationTokenSource Cts = new();
        public bool Started, Answered;
    }

    private readonly object _inflightLock = new();
    private readonly Dictionary<ulong, Tracked> _inflight = [];
    // INTERRUPTs that found no tracked request: the target may still be on its way from another reader thread
    // (the kernel only sends one after the request was read). Uniques are never reused, so stale ones are harmless.
    private readonly ulong[] _earlyInterrupts = new ulong[64];
    private int _earlyNext;

    /// <summary>
    /// True for a READ or WRITE of an image range that may wait on the backing (IBackingLocality): the
    /// transport serves it on a backing worker with TrackInterruptible/HandleInterruptible. Never throws.
    /// </summary>
    public bool MayWaitOnBacking(ReadOnlySpan<byte> req)
    {
        if (!_initialized || req.Length < InHeaderSize + ReadInSize) return false;
        uint op = U32(req, InHeader.Opcode);
        if (op != READ && op != WRITE) return false;
        if (!Find(U64(req, InHeader.NodeId), out var node) || node.Locality is not { } locality) return false;
        var body = req[InHeaderSize..];
        long offset = (long)U64(body, op == READ ? ReadIn.Offset : WriteIn.Offset);
        uint size = U32(body, op == READ ? ReadIn.Size : WriteIn.Size);
        if (offset < 0 || size == 0) return false;
        try { return locality.MayReadBacking(offset, size, write: op == WRITE); }
        catch (Exception e) when (e is Fvd.Core.FvdException or ObjectDisposedException) { return false; } // the request will say
    }

    /// <summary>
    /// Makes the request interruptible from now on. Returns false when an INTERRUPT for it came first: then it
    /// is not tracked and the caller answers it EINTR without doing anything.
    /// </summary>
    public bool TrackInterruptible(ulong unique)
    {
        lock (_inflightLock)
        {
            int i = Array.IndexOf(_earlyInterrupts, unique);
            if (i >= 0)
            {
                _earlyInterrupts[i] = 0;
                return false;
            }
            _inflight[unique] = new Tracked();
            return true;
        }
    }

    /// <summary>
    /// Handles a request registered with TrackInterruptible, with its token current for the device reads
    /// (IoCancellation). Returns 0 (no reply) when an INTERRUPT already answered it while it was queued; EINTR
    /// when interrupted while waiting on the backing. Then it is forgotten: a later INTERRUPT is ignored.
    /// Never throws.
    /// </summary>
    public int HandleInterruptible(ReadOnlySpan<byte> req, Span<byte> reply)
    {
        ulong unique = req.Length >= InHeaderSize ? U64(req, InHeader.Unique) : 0;
        Tracked? t;
        lock (_inflightLock)
        {
            _inflight.TryGetValue(unique, out t);
            if (t is not null) t.Started = true;
        }
        try
        {
            if (t is { Answered: true }) return 0;
            if (t is { Cts.IsCancellationRequested: true }) return Error(reply, unique, Errno.EINTR); // nothing done
            using (IoCancellation.Use(t?.Cts.Token ?? default)) return Handle(req, reply);
        }
        finally
        {
            ForgetInterruptible(unique);
        }
    }

    /// <summary>Stops tracking a request; a later INTERRUPT for it is ignored.</summary>
    public void ForgetInterruptible(ulong unique)
    {
        Tracked? t;
        lock (_inflightLock) _inflight.Remove(unique, out t);
        t?.Cts.Dispose(); // Cancel only runs under the lock, on tracked entries: never on a disposed one
    }

    /// <summary>Cancels every tracked request (unmount: nobody waits for their answers any more).</summary>
    public void InterruptAll()
    {
        lock (_inflightLock)
            foreach (var t in _inflight.Values) t.Cts.Cancel();
    }

    /// <summary>
    /// FUSE_INTERRUPT takes no reply of its own. A queued target is answered EINTR here (the reply carries the
    /// target's unique); a running one is cancelled; an unknown one (finished, or not tracked yet) is remembered.
    /// </summary>
    private int Interrupt(ReadOnlySpan<byte> body, Span<byte> reply)
    {
        if (body.Length < InterruptInSize) return 0;
        ulong target = U64(body, InterruptIn.Unique);
        lock (_inflightLock)
        {
            if (!_inflight.TryGetValue(target, out var t))
            {
                _earlyInterrupts[_earlyNext] = target;
                _earlyNext = (_earlyNext + 1) % _earlyInterrupts.Length;
                return 0;
            }
            if (t.Answered) return 0;
            t.Cts.Cancel();
            if (t.Started) return 0;
            t.Answered = true;
        }
        return Error(reply, target, Errno.EINTR);
    }
}
