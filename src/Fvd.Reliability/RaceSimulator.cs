// Harness 2: a race simulator in the blksim / qemu-test manner (src/Fvd.Reliability/README.md).
//
// Many logical testers run on real threads and issue seeded random reads, writes (aligned and not),
// discards, zero-writes and flushes over overlapping ranges of one image. The simulated devices under the
// image delay each request by a seeded random amount before and after applying it (spins, yields, short
// sleeps), so requests complete in a different order from the one they were issued in, and can fail with
// an injected EIO (a failed flush is final: every later flush and the close fail too, and the image is
// left marked for fvd-img check). A truth model checks every read byte against the values a serial order allows: the
// value of a write that started before the read ended and was not overwritten by a write that completed
// before the read started (or the original content when no such write completed).
//
// Each tester's operation sequence is a pure function of (seed, tester); a failure prints the seed and
// `fvd-reliability sim --seed S --seeds 1` replays the same operations (the thread interleaving itself
// depends on the host scheduler and is not replayed bit for bit).
using Fvd.Core;
using Fvd.Core.Io;

namespace Fvd.Reliability;

/// <summary>A memory device that delays requests randomly and can fail them (EIO) or, as a planted bug, drop one.</summary>
public sealed class SimDevice : IBlockDevice
{
    private readonly MemoryDevice _inner;
    private readonly object _lock = new();
    private readonly string _name;
    [ThreadStatic] private static Random? t_rng;
    [ThreadStatic] private static int t_injected;
    private int _writes;

    public SimDevice(MemoryDevice inner, string name)
    {
        _inner = inner;
        _name = name;
    }

    public MemoryDevice Inner => _inner;
    /// <summary>Probability that a write, discard, zero-write or flush fails with an injected EIO.</summary>
    public double FailProbability { get; set; }
    /// <summary>Planted bug: every n-th write is acknowledged but never applied. 0 = off.</summary>
    public int DropWriteNumber { get; set; }
    /// <summary>Planted bug: injected errors are counted but swallowed (the request reports success).</summary>
    public bool SwallowErrors { get; set; }

    /// <summary>Gives the calling thread its seeded random source (each tester does at start).</summary>
    public static void SetThreadRandom(Random rng) => t_rng = rng;
    /// <summary>Injected errors on this thread since the last call; resets the count.</summary>
    public static int TakeInjected() { int n = t_injected; t_injected = 0; return n; }

    internal static readonly bool NoDelay = Environment.GetEnvironmentVariable("FVD_SIM_NODELAY") == "1";

    private static void Delay()
    {
        var rng = t_rng;
        if (rng is null || NoDelay) return;
        int r = rng.Next(100);
        if (r < 40) return;
        if (r < 75) Thread.SpinWait(rng.Next(2000));
        else if (r < 97) Thread.Yield();
        else Thread.Sleep(rng.Next(2) == 0 ? 0 : 1);
    }

    private bool Inject()
    {
        var rng = t_rng;
        if (FailProbability <= 0 || rng is null || rng.NextDouble() >= FailProbability) return false;
        t_injected++;
        return !SwallowErrors;
    }

    private FvdException Eio(string what, long off) => new(FvdErrorKind.Io, $"injected EIO on {_name} {what} at {off}");

    public long Length => _inner.Length;
    public bool IsReadOnly => _inner.IsReadOnly;

    public void Read(long offset, Span<byte> buffer)
    {
        Delay();
        lock (_lock) _inner.Read(offset, buffer);
        Delay();
    }

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        Delay();
        bool fail = Inject();
        bool drop = DropWriteNumber > 0 && Interlocked.Increment(ref _writes) % DropWriteNumber == 0; // every Nth: a single drop can be overwritten before any read sees it
        if (fail && t_rng!.Next(2) == 0) throw Eio("write", offset);
        lock (_lock)
        {
            if (fail) _inner.Write(offset, buffer[..(buffer.Length / 2)]); // a partial write, then the error
            else if (!drop) _inner.Write(offset, buffer);
        }
        if (fail) throw Eio("write", offset);
        Delay();
    }

    public void Flush()
    {
        Delay();
        if (Inject()) throw Eio("flush", 0);
        Delay();
    }

    public void Discard(long offset, long length)
    {
        Delay();
        if (Inject()) throw Eio("discard", offset);
        lock (_lock) _inner.Discard(offset, length);
        Delay();
    }

    public void WriteZeroes(long offset, long length)
    {
        Delay();
        if (Inject()) throw Eio("write-zeroes", offset);
        lock (_lock) _inner.WriteZeroes(offset, length);
        Delay();
    }

    public Extent GetExtent(long offset, long maxLength) => _inner.GetExtent(offset, maxLength);
    public void Dispose() { }
}

/// <summary>The truth model: every write with its issue and completion times, indexed by sector.</summary>
internal sealed class Truth
{
    private sealed class W
    {
        public long Off, Len, Start, End = long.MaxValue;
        public byte[]? Data; // null = zeros
        public bool Failed;
        public int Tester, Seq;
        public byte At(long x) => Data is null ? (byte)0 : Data[x - Off];
        public bool Covers(long x) => x >= Off && x < Off + Len;
    }

    private readonly object _lock = new();
    private readonly List<W>[] _sectors;
    private readonly bool[] _initialDead;
    private readonly byte[] _original;
    private long _clock;

    public Truth(long size, byte[] original)
    {
        _sectors = new List<W>[(size + 511) / 512];
        for (int i = 0; i < _sectors.Length; i++) _sectors[i] = new List<W>();
        _initialDead = new bool[_sectors.Length];
        _original = original;
    }

    public object BeginWrite(long off, long len, byte[]? data, int tester, int seq)
    {
        lock (_lock)
        {
            var w = new W { Off = off, Len = len, Data = data, Start = ++_clock, Tester = tester, Seq = seq };
            for (long s = off / 512; s <= (off + len - 1) / 512; s++) _sectors[s].Add(w);
            return w;
        }
    }

    public void EndWrite(object handle, bool ok)
    {
        var w = (W)handle;
        lock (_lock)
        {
            w.End = ++_clock;
            w.Failed = !ok;
            if (!ok) return;
            // Prune: once a successful write that covers a whole sector ended before every read still
            // running (and so before every later read) began, the writes of that sector that ended before
            // it started, and the original content, are visible to no read again.
            long threshold = _activeReads.Count > 0 ? _activeReads.Min : long.MaxValue;
            for (long s = (w.Off + 511) / 512; s < (w.Off + w.Len) / 512; s++)
            {
                W? best = null;
                foreach (var o in _sectors[s])
                    if (!o.Failed && o.End < threshold && o.Off <= s * 512 && o.Off + o.Len >= (s + 1) * 512 && (best is null || o.Start > best.Start))
                        best = o;
                if (best is null) continue;
                _sectors[s].RemoveAll(o => o.End < best.Start);
                _initialDead[s] = true;
            }
        }
    }

    private readonly SortedSet<long> _activeReads = new();

    public long BeginRead()
    {
        lock (_lock)
        {
            long t = ++_clock;
            _activeReads.Add(t);
            return t;
        }
    }

    /// <summary>Returns null when every byte is allowed, else a description of the first bad byte.</summary>
    public string? EndRead(long off, ReadOnlySpan<byte> got, long startR)
    {
        lock (_lock)
        {
            _activeReads.Remove(startR);
            long endR = ++_clock;
            var bounds = new List<long>(8);
            var cands = new List<W>(8);
            for (long s = off / 512; s <= (off + got.Length - 1) / 512; s++)
            {
                var list = _sectors[s];
                long from = Math.Max(off, s * 512), to = Math.Min(off + got.Length, (s + 1) * 512);
                // Split the sector's range where some write starts or ends: inside a piece coverage is uniform.
                bounds.Clear();
                bounds.Add(from);
                bounds.Add(to);
                foreach (var w in list)
                {
                    if (w.Off > from && w.Off < to) bounds.Add(w.Off);
                    if (w.Off + w.Len > from && w.Off + w.Len < to) bounds.Add(w.Off + w.Len);
                }
                bounds.Sort();
                for (int k = 0; k + 1 < bounds.Count; k++)
                {
                    long a = bounds[k], b = bounds[k + 1];
                    if (a == b) continue;
                    // X = the latest start among successful writes of the piece that completed before the read began.
                    long xStart = -1;
                    foreach (var w in list)
                        if (!w.Failed && w.End < startR && w.Covers(a) && w.Start > xStart) xStart = w.Start;
                    bool originalOk = xStart < 0 && !_initialDead[s];
                    cands.Clear();
                    foreach (var w in list)
                        if (w.Covers(a) && w.Start < endR && w.End >= xStart) cands.Add(w);
                    long x = a;
                    while (x < b)
                    {
                        var g = got.Slice((int)(x - off), (int)(b - x));
                        int n = originalOk ? g.CommonPrefixLength(_original.AsSpan((int)x, (int)(b - x))) : 0;
                        if (n == 0)
                            foreach (var w in cands)
                            {
                                n = w.Data is null ? (g.IndexOfAnyExcept((byte)0) is int z && z < 0 ? g.Length : z)
                                    : g.CommonPrefixLength(w.Data.AsSpan((int)(x - w.Off), (int)(b - x)));
                                if (n > 0) break;
                            }
                        if (n == 0)
                        {
                            byte v = g[0];
                            var desc = cands.Select(w => $"tester {w.Tester} op {w.Seq} [{w.Start}-{(w.End == long.MaxValue ? "running" : w.End.ToString(System.Globalization.CultureInfo.InvariantCulture))}{(w.Failed ? ", failed" : "")}]=0x{w.At(x):x2}");
                            return $"byte {x} reads 0x{v:x2}; read [{startR}-{endR}] allows {(originalOk ? $"original 0x{_original[x]:x2}, " : "")}{string.Join(", ", desc)}";
                        }
                        x += n;
                    }
                }
            }
            return null;
        }
    }
}

public sealed class RaceSimulator
{
    public int Testers { get; init; } = 8;
    public int Requests { get; init; } = 2000;
    public double FailProbability { get; init; } = 0.01;
    /// <summary>Planted bug: the data device drops every n-th write (acknowledged, never applied).</summary>
    public int PlantDropDataWrite { get; init; }
    /// <summary>Planted bug: device errors are swallowed and the request acknowledged.</summary>
    public bool PlantSwallowErrors { get; init; }

    public HarnessResult Run(int seed, int seeds)
    {
        var result = new HarnessResult("race-sim");
        for (int s = seed; s < seed + seeds; s++)
        {
            string? fail = RunSeed(s);
            if (fail is not null && _lastInline) fail = "(inline data) " + fail;
            if (fail is null) result.Pass();
            else result.Fail($"race-sim seed {s} (replay: fvd-reliability sim --seed {s} --seeds 1 --requests {Requests}): {fail}");
        }
        result.Notes.Add($"race-sim: seeds {seed}..{seed + seeds - 1}, {Testers} testers, {_requests} requests, {_reads} reads verified, {_errors} injected device errors reported to the guest");
        return result;
    }

    private enum Kind { Read, Write, Discard, Zero, Flush }
    private long _requests, _reads, _errors;
    private bool _lastInline;

    private string? RunSeed(int seed)
    {
        var rng = new Random(seed);
        int bs = new[] { 512, 4096, 4096, 16384 }[rng.Next(4)];
        long vsize = (long)bs * 48;
        byte[]? backingBytes = rng.Next(8) == 0 ? null : MemImage.RandomBacking(rng, (int)(vsize * 3 / 4) + 100, bs);
        // A quarter of the seeds keep the data inside the metadata file (one device for both).
        bool inline = PlantDropDataWrite == 0 && rng.Next(4) == 0;
        var mi = MemImage.Build(vsize, bs, backingBytes, inline);
        var meta = new SimDevice(new MemoryDevice(mi.Meta), "meta");
        var data = inline ? null : new SimDevice(new MemoryDevice(mi.Data!), "data") { DropWriteNumber = PlantDropDataWrite, SwallowErrors = PlantSwallowErrors };
        meta.SwallowErrors = PlantSwallowErrors;
        void SetFail(double p)
        {
            meta.FailProbability = p;
            if (data is not null) data.FailProbability = p;
        }
        var backing = backingBytes is null ? null : new MemoryDevice(backingBytes, readOnly: true);
        long backingSize = mi.Header.BackingSize;
        var original = new byte[vsize];
        if (backingBytes is not null) backingBytes.AsSpan(0, (int)backingSize).CopyTo(original);
        var truth = new Truth(vsize, original);
        _lastInline = inline;
        var img = MemImage.Attach(meta, data, backing, readOnly: false);
        SetFail(FailProbability);
        string? failure = null;
        void Fail(string f) { Interlocked.CompareExchange(ref failure, f, null); }
        int perTester = Math.Max(1, Requests / Testers);
        var threads = new Thread[Testers];
        for (int t = 0; t < Testers; t++)
        {
            int tester = t;
            threads[t] = new Thread(() =>
            {
                var r = new Random(unchecked(seed * 7919 + tester * 104729));
                SimDevice.SetThreadRandom(new Random(unchecked(seed * 31 + tester)));
                var buf = new byte[3 * bs + 512];
                for (int i = 0; i < perTester && Volatile.Read(ref failure) is null; i++)
                {
                    int p = r.Next(100);
                    var kind = p < 40 ? Kind.Read : p < 75 ? Kind.Write : p < 83 ? Kind.Discard : p < 90 ? Kind.Zero : Kind.Flush;
                    long off; int len;
                    // Ranges cluster on a few blocks so that requests overlap.
                    long hot = (long)r.Next(6) * bs * 8;
                    switch (r.Next(3))
                    {
                        case 0: off = hot + (long)r.Next(10) * bs; len = (1 + r.Next(3)) * bs; break;
                        case 1: off = hot + (long)r.Next(10 * bs / 512) * 512; len = (1 + r.Next(3 * bs / 512)) * 512; break;
                        default: off = hot + r.Next(10 * bs); len = 1 + r.Next(3 * bs); break;
                    }
                    off = Math.Min(off, vsize - 1);
                    len = (int)Math.Min(len, vsize - off);
                    SimDevice.TakeInjected();
                    Interlocked.Increment(ref _requests);
                    try
                    {
                        switch (kind)
                        {
                            case Kind.Read:
                            {
                                long start = truth.BeginRead();
                                img.Read(off, buf.AsSpan(0, len));
                                Interlocked.Increment(ref _reads);
                                if (truth.EndRead(off, buf.AsSpan(0, len), start) is { } bad)
                                    Fail($"tester {tester} op {i} read [{off}, +{len}): {bad}");
                                break;
                            }
                            case Kind.Flush:
                                img.Flush();
                                break;
                            default:
                            {
                                byte[]? d = null;
                                if (kind == Kind.Write) { d = new byte[len]; r.NextBytes(d); }
                                var h = truth.BeginWrite(off, len, d, tester, i);
                                bool ok = false;
                                try
                                {
                                    if (kind == Kind.Write) img.Write(off, d);
                                    else if (kind == Kind.Discard) img.Discard(off, len);
                                    else img.WriteZeroes(off, len);
                                    ok = true;
                                }
                                finally
                                {
                                    truth.EndWrite(h, ok);
                                }
                                break;
                            }
                        }
                        if (SimDevice.TakeInjected() > 0 && kind != Kind.Read)
                            Fail($"tester {tester} op {i} {kind} [{off}, +{len}): a device error was injected but the request was acknowledged");
                    }
                    // Contains: after a failed sync, later flushes fail with a message that quotes the injected error.
                    catch (FvdException e) when (e.Kind == FvdErrorKind.Io && e.Message.Contains("injected", StringComparison.Ordinal))
                    {
                        Interlocked.Increment(ref _errors);
                    }
                    catch (Exception e)
                    {
                        Fail($"tester {tester} op {i} {kind} [{off}, +{len}): {e.GetType().Name}: {e.Message}");
                    }
                }
            }) { IsBackground = true };
        }
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        if (failure is not null) { img.Dispose(); return failure; }
        // No more errors: check the whole disk, close (flush), re-open and check again.
        SetFail(0);
        SimDevice.SetThreadRandom(new Random(seed));
        var all = new byte[vsize];
        try
        {
            long st = truth.BeginRead();
            img.Read(0, all);
            if (truth.EndRead(0, all, st) is { } bad) return $"final read: {bad}";
            try
            {
                img.Dispose();
            }
            catch (FvdException e) when (e.Kind == FvdErrorKind.Io && e.Message.Contains("sync failed", StringComparison.Ordinal))
            {
                // A sync failed during the run: writes since the last good flush are not promised, so only check
                // that the image was not marked clean (and is marked corrupt unless that write failed too).
                using var re = MemImage.Attach(new MemoryDevice(meta.Inner.Bytes), data is null ? null : new MemoryDevice(data.Inner.Bytes), backing, readOnly: true);
                return re.WasUnclean ? null : "after a failed sync the image was marked clean";
            }
            var img2 = MemImage.Attach(new MemoryDevice(meta.Inner.Bytes), data is null ? null : new MemoryDevice(data.Inner.Bytes), backing, readOnly: false);
            var again = new byte[vsize];
            img2.Read(0, again);
            img2.Dispose();
            if (!again.AsSpan().SequenceEqual(all))
            {
                int x = again.AsSpan().CommonPrefixLength(all);
                return $"after close and re-open, byte {x} reads 0x{again[x]:x2}, before close 0x{all[x]:x2} (an acknowledged write was lost)";
            }
        }
        catch (Exception e)
        {
            return $"final check: {e.GetType().Name}: {e.Message}";
        }
        return null;
    }
}
