// Copy-on-read (paper 3.3.4, docs/architecture.md): a read served from the backing is widened to whole
// blocks, and those blocks are queued to be saved into the data file (BlockSaver.cs) by one worker. Saving
// pauses while too much is unsaved (back-pressure), which loses nothing: the block stays in the backing.
using System.Buffers;
using System.Threading.Channels;
using Fvd.Core.Image.Mapping;

namespace Fvd.Core.Image;

internal sealed class CopyOnRead(IBlockMap map, BackingReader backing, BlockSaver saver, ImageCounters counters,
    long maxOutstandingBytes, Func<bool> closing, Action afterSave, string displayPath)
{
    private readonly object _gate = new();
    private Channel<SaveJob>? _queue;
    private Task? _worker;
    private long _outstanding;
    private volatile bool _on;
    private volatile bool _stopped;

    private readonly record struct SaveJob(long Offset, byte[] Buffer, int Length);

    public bool Enabled => _on;

    /// <summary>Turns saving on or off; the worker starts the first time it is turned on.</summary>
    public void Enable(bool on)
    {
        if (on)
        {
            lock (_gate)
            {
                if (_queue is null)
                {
                    _queue = Channel.CreateUnbounded<SaveJob>(new UnboundedChannelOptions { SingleReader = true });
                    _worker = Task.Run(Worker);
                }
            }
        }
        _on = on;
    }

    /// <summary>Serves a backing run in pieces of at most 1 MiB, each saved unless too much is in flight.</summary>
    public void Read(long pos, Span<byte> dst)
    {
        int shift = map.BlockShift;
        long piece = Math.Max(1L << shift, Math.Min(1 << 20, maxOutstandingBytes) >> shift << shift);
        while (!dst.IsEmpty)
        {
            // Cut at a block boundary so each piece widens to whole blocks on its own.
            long next = Math.Min(pos + dst.Length, (pos >> shift << shift) + piece);
            var part = dst[..(int)(next - pos)];
            if (!_on || !ReadAndSave(pos, part)) backing.Read(pos, part);
            dst = dst[part.Length..];
            pos = next;
        }
    }

    /// <summary>
    /// Reads whole blocks around [pos, pos+len) from the backing, serves the request from them and queues
    /// them to be saved. Returns false (caller reads normally) when too much is in flight.
    /// </summary>
    private bool ReadAndSave(long pos, Span<byte> dst)
    {
        int shift = map.BlockShift;
        long start = pos >> shift << shift;
        long end = Math.Min(map.MappedEnd, (pos + dst.Length + (1L << shift) - 1) >> shift << shift);
        long len = end - start;
        long limit = Math.Max(maxOutstandingBytes, len);
        // Back-pressure: wait a little for the saver to catch up; past that, skip saving this piece
        // (paper: copy-on-read pauses while too much is unsaved), which loses nothing.
        long deadline = Environment.TickCount64 + 2000;
        while (Interlocked.Add(ref _outstanding, len) > limit)
        {
            Interlocked.Add(ref _outstanding, -len);
            if (Environment.TickCount64 > deadline || closing()) return false;
            lock (_gate) Monitor.Wait(_gate, 20);
        }
        var buf = ArrayPool<byte>.Shared.Rent((int)len);
        try
        {
            backing.Read(start, buf.AsSpan(0, (int)len));
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buf);
            Interlocked.Add(ref _outstanding, -len);
            throw;
        }
        buf.AsSpan((int)(pos - start), dst.Length).CopyTo(dst);
        if (!_queue!.Writer.TryWrite(new SaveJob(start, buf, (int)len)))
        {
            ArrayPool<byte>.Shared.Return(buf);
            Interlocked.Add(ref _outstanding, -len);
        }
        return true;
    }

    private async Task Worker()
    {
        var reader = _queue!.Reader;
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            while (reader.TryRead(out var job))
            {
                try
                {
                    if (!_stopped)
                    {
                        long saved = saver.Save(job.Offset, job.Buffer.AsSpan(0, job.Length));
                        Interlocked.Add(ref counters.CopyOnReadBytesSaved, saved);
                        // Reads alone may have made every block local: finish as prefetch would (before
                        // the job counts as done, so WaitForSaves sees the result).
                        if (saved > 0) afterSave();
                    }
                }
                catch (Exception e)
                {
                    // A failed save or finish loses nothing (the block stays in the backing, the flag unset);
                    // report and go on.
                    Console.Error.WriteLine($"fvd: {displayPath}: copy-on-read save at {job.Offset} failed: {e.Message}");
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(job.Buffer);
                    Interlocked.Add(ref _outstanding, -job.Length);
                    lock (_gate) Monitor.PulseAll(_gate);
                }
            }
        }
    }

    /// <summary>Waits until every queued save has been written.</summary>
    public bool WaitForSaves(TimeSpan timeout)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (Interlocked.Read(ref _outstanding) > 0)
        {
            if (sw.Elapsed > timeout) return false;
            Thread.Sleep(1);
        }
        return true;
    }

    /// <summary>Stops the worker after it has saved what is queued; a job still queued after that is dropped.</summary>
    public void Stop()
    {
        _on = false;
        Channel<SaveJob>? q;
        lock (_gate) q = _queue;
        if (q is null) return;
        q.Writer.TryComplete();
        try { _worker?.Wait(TimeSpan.FromSeconds(30)); } catch (AggregateException) { }
        _stopped = true;
    }
}
