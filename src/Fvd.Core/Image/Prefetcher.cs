// Adaptive whole-image prefetch (paper 3.4): after a start delay, copy every block not yet local from the
// backing into the data file, in address order, skipping local blocks. One outstanding backing read and one
// outstanding data write (a two-stage pipeline). An upper limit (leaky bucket) caps read and write rates;
// a lower limit detects contention: when the moving average falls below it, pause with probability 1/2 for
// a random time up to the throttle time, else reset the estimate and go on (paper 3.4.2), so N hosts that
// share one storage server back off instead of fighting.
//
// Threads: Run and the read stage share one thread, the write stage has its own. Each stage keeps its own
// throttle; the only random source is Random.Shared (a plain Random used by both stages could be corrupted
// and then pause forever); the state has one owner per part (StateCell).
using System.Buffers;
using System.Diagnostics;
using System.Threading.Channels;
using Fvd.Core.Format;
using Fvd.Core.Image.Mapping;

namespace Fvd.Core.Image;

internal sealed class Prefetcher : IDisposable
{
    private const double Alpha = 0.8; // EWMA weight of the old estimate per 100 ms window (original FVD default)
    private const double WindowSeconds = 0.1;
    private const int DefaultChunk = 1 << 20;
    private static readonly TimeSpan CheckpointInterval = TimeSpan.FromSeconds(5);

    private readonly PrefetchSettings _s;
    private readonly IBlockMap _map;
    private readonly BackingReader _backing;
    private readonly BlockSaver _saver;
    private readonly ImageCounters _counters;
    private readonly Func<IReadOnlyList<(long Offset, long Length)>> _profile;
    private readonly Action _flush;
    private readonly Action _finish;
    private readonly string _displayPath;
    private readonly CancellationTokenSource _cts = new();
    private readonly Task _task;
    private readonly StateCell _state = new();
    private double _rate;

    public PrefetchState State => _state.Current;
    public double Rate => Volatile.Read(ref _rate);
    /// <summary>Set when the run ended with an error (the reason); prefetch is then stopped.</summary>
    public string? Error { get; private set; }

    /// <summary>
    /// Starts prefetch: blocks the map says are in the backing are read through backing and saved by saver;
    /// profile gives the ranges to fetch first (read when the run starts), flush persists progress now and
    /// then, finish is called once every block is local.
    /// </summary>
    public Prefetcher(PrefetchSettings s, IBlockMap map, BackingReader backing, BlockSaver saver, ImageCounters counters,
        Func<IReadOnlyList<(long Offset, long Length)>> profile, Action flush, Action finish, string displayPath)
    {
        _s = s;
        _map = map;
        _backing = backing;
        _saver = saver;
        _counters = counters;
        _profile = profile;
        _flush = flush;
        _finish = finish;
        _displayPath = displayPath;
        _task = Task.Factory.StartNew(Run, TaskCreationOptions.LongRunning);
    }

    private void Run()
    {
        var ct = _cts.Token;
        try
        {
            if (_s.StartDelaySeconds > 0 && ct.WaitHandle.WaitOne(TimeSpan.FromSeconds(_s.StartDelaySeconds))) return;
            _state.Set(PrefetchState.Running);
            int chunk = _s.ChunkBytes > 0 ? _s.ChunkBytes : Math.Max(DefaultChunk, 1 << _map.BlockShift);
            var pipe = Channel.CreateBounded<(long Offset, byte[] Buf, int Len)>(new BoundedChannelOptions(1) { SingleReader = true, SingleWriter = true });
            var writer = Task.Factory.StartNew(() =>
            {
                try
                {
                    WriteStage(pipe.Reader, ct);
                }
                catch (Exception e)
                {
                    // Close the pipe with the error, so a read stage blocked on the full pipe stops too.
                    pipe.Writer.TryComplete(e);
                    throw;
                }
            }, TaskCreationOptions.LongRunning);
            try
            {
                ReadStage(pipe.Writer, chunk, ct);
            }
            finally
            {
                pipe.Writer.TryComplete();
                writer.Wait();
            }
            if (ct.IsCancellationRequested) return;
            _finish();
            _state.Set(PrefetchState.Finished);
        }
        catch (OperationCanceledException) { }
        catch (AggregateException e) when (e.InnerException is OperationCanceledException) { }
        catch (Exception caught)
        {
            var e = RootCause(caught);
            if (e is OperationCanceledException) return;
            Error = e.Message;
            Console.Error.WriteLine($"fvd: {_displayPath}: prefetch stopped: {e.Message}");
            _state.Set(PrefetchState.Disabled);
        }
    }

    /// <summary>The error that stopped a stage, without the task and pipe wrappers around it.</summary>
    private static Exception RootCause(Exception e)
    {
        while (e is AggregateException { InnerException: { } a }) e = a;
        while (e is ChannelClosedException { InnerException: { } c }) e = RootCause(c);
        return e;
    }

    private void ReadStage(ChannelWriter<(long, byte[], int)> output, int chunk, CancellationToken ct)
    {
        var map = _map;
        int shift = map.BlockShift;
        long chunkBlocks = Math.Max(1, chunk >> shift);
        long cursor = 0;
        var throttle = new StageThrottle(this, _s.MaxReadKiBps, _s.MinReadKiBps);
        // Profile-directed first (paper 3.4.1): the ranges a boot reads, in its order; then the whole image.
        var profile = _profile();
        int pi = 0;
        long profileCursor = -1, profileEnd = -1;
        while (!ct.IsCancellationRequested)
        {
            long b, limit;
            if (profileCursor >= profileEnd && pi < profile.Count)
            {
                profileCursor = profile[pi].Offset >> shift;
                profileEnd = Math.Min(map.Blocks, (profile[pi].Offset + profile[pi].Length + (1L << shift) - 1) >> shift);
                pi++;
                continue;
            }
            bool inProfile = profileCursor < profileEnd;
            limit = inProfile ? profileEnd : map.Blocks;
            b = map.NextInBacking(inProfile ? profileCursor : cursor, limit);
            if (b >= limit)
            {
                if (inProfile) { profileCursor = profileEnd; continue; }
                return;
            }
            long e = Math.Min(Math.Min(map.NextLocal(b, limit), limit), b + chunkBlocks);
            long off = b << shift;
            int len = (int)(Math.Min(e << shift, map.MappedEnd) - off);
            var buf = ArrayPool<byte>.Shared.Rent(len);
            var sw = Stopwatch.StartNew();
            try
            {
                _backing.Read(off, buf.AsSpan(0, len), prefetch: true);
            }
            catch
            {
                ArrayPool<byte>.Shared.Return(buf);
                throw;
            }
            Volatile.Write(ref _rate, throttle.Account(len, sw.Elapsed, ct));
            output.WriteAsync((off, buf, len), ct).AsTask().GetAwaiter().GetResult();
            if (inProfile) profileCursor = e;
            else cursor = e;
            throttle.BackOffIfSlow(ct);
        }
    }

    private void WriteStage(ChannelReader<(long Offset, byte[] Buf, int Len)> input, CancellationToken ct)
    {
        var throttle = new StageThrottle(this, _s.MaxWriteKiBps, _s.MinWriteKiBps);
        var sinceCheckpoint = Stopwatch.StartNew();
        while (input.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
        {
            while (input.TryRead(out var item))
            {
                try
                {
                    if (ct.IsCancellationRequested) continue;
                    var sw = Stopwatch.StartNew();
                    long saved = _saver.Save(item.Offset, item.Buf.AsSpan(0, item.Len));
                    Interlocked.Add(ref _counters.PrefetchBytesSaved, saved);
                    throttle.Account(item.Len, sw.Elapsed, ct);
                    throttle.BackOffIfSlow(ct);
                }
                catch (OperationCanceledException) { }
                finally
                {
                    ArrayPool<byte>.Shared.Return(item.Buf);
                }
                // Persist progress now and then, so a killed daemon resumes without re-reading it.
                if (sinceCheckpoint.Elapsed > CheckpointInterval && !ct.IsCancellationRequested)
                {
                    _flush();
                    sinceCheckpoint.Restart();
                }
            }
        }
    }

    /// <summary>
    /// Moving average with the paper's weight per 100 ms of measurement, so a sample that took 250 ms counts
    /// like 2.5 windows: the estimate reacts in the same wall time whatever the chunk size.
    /// </summary>
    private static double Average(double old, double sample, double seconds)
    {
        if (old < 0) return sample;
        double keep = Math.Pow(Alpha, seconds / WindowSeconds);
        return keep * old + (1 - keep) * sample;
    }

    private void Pause(CancellationToken ct)
    {
        int ms = 1 + Random.Shared.Next(Math.Max(1, _s.ThrottleMs));
        using (_state.EnterPause()) ct.WaitHandle.WaitOne(ms);
        ct.ThrowIfCancellationRequested();
    }

    public void Dispose()
    {
        _cts.Cancel();
        try { _task.Wait(TimeSpan.FromSeconds(60)); } catch (AggregateException) { }
        _cts.Dispose();
    }

    /// <summary>
    /// One stage's limits, used only by that stage's thread: the upper limit (leaky bucket) and the lower
    /// one (moving average of its throughput; below it, back off as paper 3.4.2 says).
    /// </summary>
    private sealed class StageThrottle(Prefetcher owner, int maxKiBps, int minKiBps)
    {
        private readonly LeakyBucket _bucket = new(maxKiBps);
        private double _average = -1;

        /// <summary>Counts bytes moved in the given time, sleeps if over the upper limit; returns the average rate.</summary>
        public double Account(long bytes, TimeSpan took, CancellationToken ct)
        {
            double secs = Math.Max(took.TotalSeconds, 1e-6);
            _average = Average(_average, bytes / secs, secs);
            _bucket.Take(bytes, ct);
            return _average;
        }

        /// <summary>Below the lower limit: pause with probability 1/2, else measure afresh.</summary>
        public void BackOffIfSlow(CancellationToken ct)
        {
            if (minKiBps <= 0 || _average >= minKiBps * 1024.0) return;
            if (Random.Shared.Next(2) == 0) owner.Pause(ct);
            _average = -1;
            _bucket.Reset();
        }
    }

    /// <summary>
    /// The state, with one owner per part: Run alone moves the life cycle (Waiting, Running, Finished,
    /// Disabled); a stage only counts itself into and out of a pause. Paused shows while any stage is
    /// paused, so one stage resuming neither hides the other's pause nor overwrites an end state.
    /// </summary>
    internal sealed class StateCell
    {
        private int _life = (int)PrefetchState.Waiting;
        private int _pausedStages;

        public PrefetchState Current
        {
            get
            {
                var life = (PrefetchState)Volatile.Read(ref _life);
                return life == PrefetchState.Running && Volatile.Read(ref _pausedStages) > 0 ? PrefetchState.Paused : life;
            }
        }

        public void Set(PrefetchState s)
        {
            if (s == PrefetchState.Paused) throw new ArgumentException("a pause is entered with EnterPause", nameof(s));
            Volatile.Write(ref _life, (int)s);
        }

        /// <summary>Counts a stage as paused until the returned scope is disposed.</summary>
        public PauseScope EnterPause()
        {
            Interlocked.Increment(ref _pausedStages);
            return new PauseScope(this);
        }

        public readonly struct PauseScope(StateCell cell) : IDisposable
        {
            public void Dispose() => Interlocked.Decrement(ref cell._pausedStages);
        }
    }

    /// <summary>Upper throughput limit: sleeps so that bytes taken since the last reset stay under the rate.</summary>
    private sealed class LeakyBucket(int kibps)
    {
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private long _bytes;

        public void Reset()
        {
            _bytes = 0;
            _clock.Restart();
        }

        public void Take(long bytes, CancellationToken ct)
        {
            if (kibps <= 0) return;
            _bytes += bytes;
            double due = _bytes / (kibps * 1024.0);
            double ahead = due - _clock.Elapsed.TotalSeconds;
            if (ahead > 0) ct.WaitHandle.WaitOne(TimeSpan.FromSeconds(ahead));
            // Forget old history so a long idle period does not allow a burst.
            if (_clock.Elapsed.TotalSeconds > 10) Reset();
        }
    }
}
