// Copy-on-read and the save path shared with prefetch (paper 3.3.4, DESIGN.md invariant 4).
//
// A save writes backing content into the data file and sets the block's bit in memory only. The bit
// reaches the disk at the next Flush like any other (after the data's fdatasync), so a crash can only lose
// blocks whose content equals the backing's: nothing is lost. A save takes the block's stripe lock and
// re-checks the bit, so it never overwrites data a guest wrote after the read started: every 0 -> 1 bit
// change happens under that lock.
using System.Buffers;
using System.Threading.Channels;

namespace Fvd.Core.Image;

public sealed partial class FvdImage
{
    private Channel<SaveJob>? _corQueue;
    private Task? _corWorker;
    private long _corOutstanding;
    private readonly object _corGate = new();
    private long _backingBytesRead;
    private long _corBytesSaved;
    private long _prefetchBytesSaved;
    private volatile bool _copyOnRead;

    private readonly record struct SaveJob(long Offset, byte[] Buffer, int Length);

    /// <summary>Whether reads from the backing are saved into the data file (default from the header).</summary>
    public bool CopyOnReadEnabled => _copyOnRead;

    /// <summary>Turns copy-on-read on or off for this open (not persisted).</summary>
    public void EnableCopyOnRead(bool on)
    {
        if (on && (IsReadOnly || _backing is null)) return;
        if (on && _corQueue is null)
        {
            _corQueue = Channel.CreateUnbounded<SaveJob>(new UnboundedChannelOptions { SingleReader = true });
            _corWorker = Task.Run(CorWorker);
        }
        _copyOnRead = on;
    }

    /// <summary>Serves a backing run in pieces of at most 1 MiB, each saved unless too much is in flight.</summary>
    private void ReadWithCopyOnRead(long pos, Span<byte> dst)
    {
        long piece = Math.Max(BlockSize, Math.Min(1 << 20, Header.Prefetch.MaxOutstandingCorBytes) >> _blockShift << _blockShift);
        while (!dst.IsEmpty)
        {
            // Cut at a block boundary so each piece widens to whole blocks on its own.
            long next = Math.Min(pos + dst.Length, ((pos >> _blockShift << _blockShift) + piece));
            var part = dst[..(int)(next - pos)];
            if (!_copyOnRead || !ReadAndSave(pos, part)) ReadBacking(pos, part);
            dst = dst[part.Length..];
            pos = next;
        }
    }

    /// <summary>
    /// Called by Read for a backing run [pos, pos+len): reads whole blocks around it from the backing, serves
    /// the request from them and queues them to be saved. Returns false (caller reads normally) when the run
    /// is not block-aligned after widening or too much is in flight.
    /// </summary>
    private bool ReadAndSave(long pos, Span<byte> dst)
    {
        long start = pos >> _blockShift << _blockShift;
        long end = Math.Min(_map.MappedEnd, (pos + dst.Length + BlockSize - 1) >> _blockShift << _blockShift);
        long len = end - start;
        long limit = Math.Max(Header.Prefetch.MaxOutstandingCorBytes, len);
        // Back-pressure: wait a little for the saver to catch up; past that, skip saving this piece
        // (paper: copy-on-read pauses while too much is unsaved), which loses nothing.
        long deadline = Environment.TickCount64 + 2000;
        while (Interlocked.Add(ref _corOutstanding, len) > limit)
        {
            Interlocked.Add(ref _corOutstanding, -len);
            if (Environment.TickCount64 > deadline || Volatile.Read(ref _closing) != 0) return false;
            lock (_corGate) Monitor.Wait(_corGate, 20);
        }
        var buf = ArrayPool<byte>.Shared.Rent((int)len);
        try
        {
            ReadBacking(start, buf.AsSpan(0, (int)len));
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buf);
            Interlocked.Add(ref _corOutstanding, -len);
            throw;
        }
        buf.AsSpan((int)(pos - start), dst.Length).CopyTo(dst);
        if (!_corQueue!.Writer.TryWrite(new SaveJob(start, buf, (int)len)))
        {
            ArrayPool<byte>.Shared.Return(buf);
            Interlocked.Add(ref _corOutstanding, -len);
        }
        return true;
    }

    private async Task CorWorker()
    {
        var reader = _corQueue!.Reader;
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            while (reader.TryRead(out var job))
            {
                try
                {
                    if (Volatile.Read(ref _disposed) == 0)
                    {
                        long saved = SaveBlocks(job.Offset, job.Buffer.AsSpan(0, job.Length));
                        Interlocked.Add(ref _corBytesSaved, saved);
                        // Reads alone may have made every block local: finish as prefetch would (before
                        // the job counts as done, so WaitForCopyOnRead sees the result).
                        if (saved > 0) FinishIfAllLocal();
                    }
                }
                catch (Exception e)
                {
                    // A failed save or finish loses nothing (the block stays in the backing, the flag unset);
                    // report and go on.
                    Console.Error.WriteLine($"fvd: {Path}: copy-on-read save at {job.Offset} failed: {e.Message}");
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(job.Buffer);
                    Interlocked.Add(ref _corOutstanding, -job.Length);
                    lock (_corGate) Monitor.PulseAll(_corGate);
                }
            }
        }
    }

    /// <summary>
    /// Saves backing content of whole blocks starting at block-aligned offset into the data file, block
    /// runs at a time, skipping blocks that became local meanwhile. Returns the bytes saved.
    /// </summary>
    internal long SaveBlocks(long offset, ReadOnlySpan<byte> content)
    {
        long first = offset >> _blockShift;
        long count = (content.Length + BlockSize - 1) >> _blockShift;
        long saved = 0;
        Span<int> stripeBuf = stackalloc int[64];
        // Lock per group of blocks, so a long prefetch chunk does not hold many stripes.
        for (long g = 0; g < count; g += 64)
        {
            long gEnd = Math.Min(count, g + 64);
            var stripes = LockStripes(first + g, first + gEnd - 1, stripeBuf, out int[]? rented);
            try
            {
                for (long b = g; b < gEnd;)
                {
                    if (_map.IsLocal(first + b)) { b++; continue; }
                    long e = b + 1;
                    while (e < gEnd && !_map.IsLocal(first + e)) e++;
                    long from = b << _blockShift, to = Math.Min(e << _blockShift, content.Length);
                    WriteData(offset + from, content[(int)from..(int)to]);
                    _map.MarkLocal(first + b, e - b);
                    saved += to - from;
                    b = e;
                }
            }
            finally
            {
                UnlockStripes(stripes, rented);
            }
        }
        return saved;
    }

    /// <summary>Waits until every queued copy-on-read save has been written (tests, fvd-img).</summary>
    public bool WaitForCopyOnRead(TimeSpan timeout)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (Interlocked.Read(ref _corOutstanding) > 0)
        {
            if (sw.Elapsed > timeout) return false;
            Thread.Sleep(1);
        }
        return true;
    }

    /// <summary>Stops the copy-on-read worker after it has saved what is queued.</summary>
    private void StopCopyOnRead()
    {
        _copyOnRead = false;
        if (_corQueue is null) return;
        _corQueue.Writer.TryComplete();
        try { _corWorker?.Wait(TimeSpan.FromSeconds(30)); } catch (AggregateException) { }
    }

    public ImageStatus Status => new()
    {
        Image = Path,
        VirtualSize = Length,
        BlocksTotal = _map.Blocks,
        BlocksLocal = _map.CountLocal(),
        BackingBytesRead = Interlocked.Read(ref _backingBytesRead),
        CopyOnReadBytesSaved = Interlocked.Read(ref _corBytesSaved),
        PrefetchBytesSaved = Interlocked.Read(ref _prefetchBytesSaved),
        // Finished however the blocks became local, even while a delayed prefetch still waits to notice.
        Prefetch = AllLocal && _map.Blocks > 0 ? PrefetchState.Finished : _prefetcher?.State ?? PrefetchState.Disabled,
        PrefetchRate = _prefetcher?.Rate ?? 0,
        CopyOnRead = _copyOnRead,
        Finished = AllLocal,
    };
}
