// Harness 1: crash-state enumeration at the device layer (docs/fvd-paper.md, appendix; src/Fvd.Reliability/README.md).
//
// A seeded guest workload runs against an image whose metadata and data devices are recording devices.
// The trace is then cut after every device request; at each cut, per device, everything before that
// device's last completed Flush is durable and the later requests survive in any subset (all subsets when
// at most 8 are pending, seeded samples otherwise), each possibly torn at 512-byte sectors. Every state is
// attached (recovery), read whole and checked against the guest-level oracle, then closed and re-opened to
// check that recovery is idempotent. The trace itself is checked for bitmap monotonicity and ordering.
//
// Some workloads see one fdatasync fail (then succeed again), as Linux reports a writeback error once: the
// requests pending at the failed flush never become durable, whatever later flushes do, so they stay in
// every later state in any subset. Header writes are torn like any other request, so each state also
// checks that a torn header update leaves a copy that opens.
using Fvd.Core;
using Fvd.Core.Format;
using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Reliability;

public enum RecKind { Write, Discard, Zero, Flush, FailedFlush, GuestStart, GuestDone }

public readonly record struct Rec(int Dev, RecKind Kind, long Off, long Len, byte[]? Data, int GuestOp);

/// <summary>Logs every modifying request and completed flush of a device into a shared trace.</summary>
public sealed class RecordingDevice : IBlockDevice
{
    private readonly IBlockDevice _inner;
    private readonly List<Rec> _log;
    private readonly int _dev;

    public RecordingDevice(IBlockDevice inner, int dev, List<Rec> log)
    {
        _inner = inner;
        _dev = dev;
        _log = log;
    }

    public long Length => _inner.Length;
    public bool IsReadOnly => _inner.IsReadOnly;
    /// <summary>The flush this many flushes from now fails (once, like a writeback error); negative: none.</summary>
    public int FailFlushIn { get; set; } = -1;
    public void Read(long offset, Span<byte> buffer) => _inner.Read(offset, buffer);

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        _inner.Write(offset, buffer);
        lock (_log) _log.Add(new Rec(_dev, RecKind.Write, offset, buffer.Length, buffer.ToArray(), -1));
    }

    public void Flush()
    {
        if (FailFlushIn >= 0 && FailFlushIn-- == 0)
        {
            lock (_log) _log.Add(new Rec(_dev, RecKind.FailedFlush, 0, 0, null, -1));
            throw new FvdException(FvdErrorKind.Io, "injected fdatasync failure");
        }
        _inner.Flush();
        lock (_log) _log.Add(new Rec(_dev, RecKind.Flush, 0, 0, null, -1));
    }

    public void Discard(long offset, long length)
    {
        _inner.Discard(offset, length);
        lock (_log) _log.Add(new Rec(_dev, RecKind.Discard, offset, length, null, -1));
    }

    public void WriteZeroes(long offset, long length)
    {
        _inner.WriteZeroes(offset, length);
        lock (_log) _log.Add(new Rec(_dev, RecKind.Zero, offset, length, null, -1));
    }

    public Extent GetExtent(long offset, long maxLength) => _inner.GetExtent(offset, maxLength);
    public void Dispose() => _inner.Dispose();
}

/// <summary>Planted bug: a device whose Flush returns without flushing (so data is never made durable).</summary>
public sealed class SwallowFlushDevice(IBlockDevice inner) : IBlockDevice
{
    public long Length => inner.Length;
    public bool IsReadOnly => inner.IsReadOnly;
    public void Read(long offset, Span<byte> buffer) => inner.Read(offset, buffer);
    public void Write(long offset, ReadOnlySpan<byte> buffer) => inner.Write(offset, buffer);
    public void Flush() { }
    public void Discard(long offset, long length) => inner.Discard(offset, length);
    public void WriteZeroes(long offset, long length) => inner.WriteZeroes(offset, length);
    public Extent GetExtent(long offset, long maxLength) => inner.GetExtent(offset, maxLength);
    public void Dispose() => inner.Dispose();
}

public enum GuestKind { Write, Discard, Zero, Flush, Close }

public sealed record GuestOp(GuestKind Kind, long Off, long Len, byte[]? Data)
{
    public override string ToString() => Kind is GuestKind.Flush or GuestKind.Close ? Kind.ToString().ToLowerInvariant()
        : $"{Kind.ToString().ToLowerInvariant()} [{Off}, +{Len})";
    public bool Touches(long x) => Kind is GuestKind.Write or GuestKind.Discard or GuestKind.Zero && x >= Off && x < Off + Len;
    public byte ValueAt(long x) => Kind == GuestKind.Write ? Data![x - Off] : (byte)0;
}

public sealed class CrashStateHarness
{
    /// <summary>Test hook (planted bug): wraps the data device so that its Flush does nothing.</summary>
    public bool PlantSwallowDataFlush { get; init; }
    /// <summary>States sampled per cut when more than MaxExhaustive requests are pending.</summary>
    public int Samples { get; init; } = 48;
    public int MaxExhaustive { get; init; } = 8;
    public int TornPerCut { get; init; } = 4;
    public Action<string>? Log { get; init; }

    private const int Meta = 0, Data = 1;
    private int _inline, _failedSync, _singleSlot;

    /// <summary>Runs workloads seed .. seed+workloads-1.</summary>
    public HarnessResult Run(int seed, int workloads)
    {
        var result = new HarnessResult("crash-states");
        for (int w = 0; w < workloads; w++) RunWorkload(seed + w, result);
        result.Notes.Add($"crash-states: {workloads} workloads (seeds {seed}..{seed + workloads - 1}), {_inline} with inline data, {_singleSlot} with one header slot, {_failedSync} with a failing fdatasync; passed counts states plus one trace check per workload");
        return result;
    }

    private sealed class Workload
    {
        public required int Seed;
        public required long VSize;
        public required int BlockSize;
        public required byte[]? Backing;
        public required MemImage Image;
        public required List<GuestOp> Ops;
        /// <summary>Data inside the metadata file (one device: data and bitmap ordered by the same flushes).</summary>
        public required bool Inline;
        /// <summary>When set: (device, n) = the n-th flush of that device after the image is open fails once.</summary>
        public required (int Dev, int Nth)? FailSync;
        public long BackingSize => Image.Header.BackingSize;
        public byte Original(long x) => Backing is not null && x < BackingSize ? Backing[x] : (byte)0;
        public string Describe() => $"seed {Seed}{(Inline ? " (inline data)" : "")}{(FailSync is { } f ? $" (flush #{f.Nth} of {(f.Dev == Meta ? "meta" : "data")} fails)" : "")}: vsize {VSize}, block {BlockSize}, backing {BackingSize}; ops: "
            + string.Join("; ", Ops.Select((o, i) => $"#{i} {o}"));
    }

    private static Workload MakeWorkload(int seed, bool allowInline, bool failSyncs)
    {
        var rng = new Random(seed);
        bool inline = allowInline && rng.Next(4) == 0;
        bool singleSlot = rng.Next(4) == 0; // images made before two header copies
        int bs = new[] { 512, 1024, 4096, 8192 }[rng.Next(4)];
        int blocks = 16;
        long vsize = (long)bs * blocks;
        byte[]? backing = null;
        if (rng.Next(10) != 0)
        {
            int blen = rng.Next(3) switch { 0 => (int)vsize, 1 => (int)vsize * 3 / 4 + 100, _ => (int)vsize + 4096 };
            backing = MemImage.RandomBacking(rng, blen, bs);
        }
        var img = MemImage.Build(vsize, bs, backing, inline, singleSlot: singleSlot);
        var ops = new List<GuestOp>();
        int n = 5 + rng.Next(8);
        for (int i = 0; i < n; i++)
        {
            int r = rng.Next(100);
            if (r < 25) { ops.Add(new GuestOp(GuestKind.Flush, 0, 0, null)); continue; }
            long off, len;
            switch (rng.Next(3))
            {
                case 0: off = (long)rng.Next(blocks) * bs; len = (long)(1 + rng.Next(3)) * bs; break;
                case 1: off = (long)rng.Next((int)(vsize / 512)) * 512; len = (long)(1 + rng.Next(Math.Max(1, 3 * bs / 512))) * 512; break;
                default: off = rng.Next((int)vsize); len = 1 + rng.Next(3 * bs); break;
            }
            len = Math.Min(len, vsize - off);
            if (r < 80)
            {
                var d = new byte[len];
                rng.NextBytes(d);
                ops.Add(new GuestOp(GuestKind.Write, off, len, d));
            }
            else ops.Add(new GuestOp(r < 90 ? GuestKind.Discard : GuestKind.Zero, off, len, null));
        }
        ops.Add(new GuestOp(GuestKind.Close, 0, 0, null));
        // A separate stream, so the workloads of earlier seeds stay as they were.
        var frng = new Random(seed ^ 0x5EED);
        (int, int)? failSync = failSyncs && frng.Next(3) == 0 ? (inline || frng.Next(3) == 0 ? Meta : Data, frng.Next(3)) : null;
        return new Workload { Seed = seed, VSize = vsize, BlockSize = bs, Backing = backing, Image = img, Ops = ops, Inline = inline, FailSync = failSync };
    }

    private List<Rec> Record(Workload w)
    {
        var log = new List<Rec>();
        var metaDev = new RecordingDevice(new MemoryDevice((byte[])w.Image.Meta.Clone()), Meta, log);
        var dataRec = w.Inline ? null : new RecordingDevice(new MemoryDevice((byte[])w.Image.Data!.Clone()), Data, log);
        IBlockDevice? dataDev = dataRec;
        if (PlantSwallowDataFlush && dataDev is not null) dataDev = new SwallowFlushDevice(dataDev);
        var backing = w.Backing is null ? null : new MemoryDevice(w.Backing, readOnly: true);
        var img = MemImage.Attach(metaDev, dataDev, backing, readOnly: false);
        if (w.FailSync is { } fs) (fs.Dev == Meta ? metaDev : dataRec!).FailFlushIn = fs.Nth;
        for (int i = 0; i < w.Ops.Count; i++)
        {
            var op = w.Ops[i];
            log.Add(new Rec(-1, RecKind.GuestStart, 0, 0, null, i));
            try
            {
                switch (op.Kind)
                {
                    case GuestKind.Write: img.Write(op.Off, op.Data); break;
                    case GuestKind.Discard: img.Discard(op.Off, op.Len); break;
                    case GuestKind.Zero: img.WriteZeroes(op.Off, op.Len); break;
                    case GuestKind.Flush: img.Flush(); break;
                    case GuestKind.Close: img.Dispose(); break;
                }
            }
            catch (FvdException e) when (w.FailSync is not null && e.Kind == FvdErrorKind.Io && op.Kind is GuestKind.Flush or GuestKind.Close)
            {
                continue; // the flush failed: it promises nothing (no GuestDone)
            }
            log.Add(new Rec(-1, RecKind.GuestDone, 0, 0, null, i));
        }
        return log;
    }

    private void RunWorkload(int seed, HarnessResult result)
    {
        var w = MakeWorkload(seed, allowInline: !PlantSwallowDataFlush, failSyncs: !PlantSwallowDataFlush);
        if (w.Inline) _inline++;
        if (w.FailSync is not null) _failedSync++;
        if (!w.Image.Header.TwoSlots) _singleSlot++;
        List<Rec> log;
        try
        {
            log = Record(w);
        }
        catch (Exception e)
        {
            result.Fail($"crash-states {w.Describe()}: workload failed: {e.GetType().Name}: {e.Message}");
            return;
        }
        CheckTrace(w, log, result);
        Enumerate(w, log, result);
    }

    /// <summary>Bitmap bits only go 0 -> 1 on the meta device, and only after the block's data was flushed.</summary>
    private static void CheckTrace(Workload w, List<Rec> log, HarnessResult result)
    {
        var h = w.Image.Header;
        if (h.BitmapLength == 0) { result.Pass(); return; }
        var meta = (byte[])w.Image.Meta.Clone();
        long blocks = h.BitmapBlocks;
        var lastDataOp = new int[blocks];
        Array.Fill(lastDataOp, -1);
        int lastDataFlush = -1;
        bool ok = true;
        for (int i = 0; i < log.Count && ok; i++)
        {
            var r = log[i];
            bool inlineData = w.Inline && r.Dev == Meta && r.Kind != RecKind.Flush && r.Off >= h.DataOffset;
            if (r.Dev == Data || inlineData || (w.Inline && r.Dev == Meta && r.Kind is RecKind.Flush or RecKind.FailedFlush))
            {
                if (r.Kind == RecKind.Flush) lastDataFlush = i;
                else if (r.Kind == RecKind.FailedFlush)
                {
                    // Data pending at a failed sync never becomes durable: no bit may ever name it.
                    for (long b = 0; b < blocks; b++) if (lastDataOp[b] > lastDataFlush) lastDataOp[b] = int.MaxValue;
                }
                else
                {
                    long off = inlineData ? r.Off - h.DataOffset : r.Off;
                    long fb = off / w.BlockSize, lb = Math.Min(blocks - 1, (off + r.Len - 1) / w.BlockSize);
                    for (long b = fb; b <= lb; b++) lastDataOp[b] = i;
                }
            }
            if (r.Dev == Meta && r.Kind is not (RecKind.Flush or RecKind.FailedFlush) && !inlineData)
            {
                long bmStart = h.BitmapOffset, bmEnd = h.BitmapOffset + h.BitmapLength;
                long from = Math.Max(r.Off, bmStart), to = Math.Min(r.Off + r.Len, bmEnd);
                for (long x = from; x < to && ok; x++)
                {
                    byte old = meta[x];
                    byte nw = r.Kind == RecKind.Write ? r.Data![x - r.Off] : (byte)0;
                    if ((old & ~nw) != 0)
                    {
                        result.Fail($"crash-states {w.Describe()}: trace #{i}: bitmap byte {x - bmStart} went 1->0 (0x{old:x2} -> 0x{nw:x2})");
                        ok = false;
                    }
                    int set = nw & ~old;
                    for (int bit = 0; bit < 8 && ok; bit++)
                    {
                        if ((set & (1 << bit)) == 0) continue;
                        long b = (x - bmStart) * 8 + bit;
                        if (b < blocks && lastDataOp[b] > lastDataFlush)
                        {
                            result.Fail(lastDataOp[b] == int.MaxValue
                                ? $"crash-states {w.Describe()}: trace #{i}: bit {b} written for data whose sync failed"
                                : $"crash-states {w.Describe()}: trace #{i}: bit {b} written to the metadata before the data write (trace #{lastDataOp[b]}) was flushed");
                            ok = false;
                        }
                    }
                }
                if (r.Kind == RecKind.Write) r.Data.CopyTo(meta.AsSpan((int)r.Off));
                else meta.AsSpan((int)r.Off, (int)r.Len).Clear();
            }
        }
        if (ok) result.Pass();
    }

    private void Enumerate(Workload w, List<Rec> log, HarnessResult result)
    {
        var rng = new Random(w.Seed * 7919 + 17);
        var durable = new[] { (byte[])w.Image.Meta.Clone(), w.Inline ? [] : (byte[])w.Image.Data!.Clone() };
        var pending = new[] { new List<Rec>(), new List<Rec>() };
        // Per device: requests pending at a failed sync (never durable, may survive in any subset), then the
        // requests made durable by later flushes, which land over them.
        var limbo = new[] { new List<Rec>(), new List<Rec>() };
        var afterLimbo = new[] { new List<Rec>(), new List<Rec>() };
        int startedMax = -1, lastFlushDone = -1;
        for (int i = 0; i <= log.Count; i++)
        {
            bool cut = i == log.Count || log[i].Dev >= 0;
            if (cut)
            {
                var all = limbo[0].Concat(limbo[1]).Concat(afterLimbo[0]).Concat(afterLimbo[1]).Concat(pending[0]).Concat(pending[1]).ToList();
                int fixedFrom = limbo[0].Count + limbo[1].Count, fixedTo = fixedFrom + afterLimbo[0].Count + afterLimbo[1].Count;
                var ctx = new CutContext(w, i, startedMax, lastFlushDone);
                int free = all.Count - (fixedTo - fixedFrom);
                int[] Fix(int[] c)
                {
                    for (int k = fixedFrom; k < fixedTo; k++) c[k] = 1;
                    return c;
                }
                if (free <= MaxExhaustive)
                {
                    for (int mask = 0; mask < 1 << free; mask++)
                    {
                        var choice = new int[all.Count];
                        for (int k = 0, bit = 0; k < all.Count; k++)
                            if (k < fixedFrom || k >= fixedTo) choice[k] = (mask >> bit++ & 1) != 0 ? 1 : 0;
                        CheckState(ctx, durable, all, Fix(choice), rng, result);
                    }
                    if (free > 0)
                        for (int t = 0; t < TornPerCut; t++) CheckState(ctx, durable, all, Fix(RandomChoice(rng, all.Count)), rng, result);
                }
                else
                    for (int t = 0; t < Samples; t++) CheckState(ctx, durable, all, Fix(RandomChoice(rng, all.Count)), rng, result);
            }
            if (i == log.Count) break;
            var r = log[i];
            switch (r.Kind)
            {
                case RecKind.GuestStart: startedMax = r.GuestOp; break;
                case RecKind.GuestDone:
                    if (w.Ops[r.GuestOp].Kind is GuestKind.Flush or GuestKind.Close) lastFlushDone = r.GuestOp;
                    break;
                case RecKind.Flush:
                    if (limbo[r.Dev].Count > 0) afterLimbo[r.Dev].AddRange(pending[r.Dev]);
                    else foreach (var p in pending[r.Dev]) Apply(durable[r.Dev], p, null, 0);
                    pending[r.Dev].Clear();
                    break;
                case RecKind.FailedFlush:
                    limbo[r.Dev].AddRange(afterLimbo[r.Dev]); // once failed, later writes stay ordered after the lost ones
                    afterLimbo[r.Dev].Clear();
                    limbo[r.Dev].AddRange(pending[r.Dev]);
                    pending[r.Dev].Clear();
                    break;
                default: pending[r.Dev].Add(r); break;
            }
        }
    }

    /// <summary>0 = dropped, 1 = whole, 2 = torn (a random subset of its sectors).</summary>
    private static int[] RandomChoice(Random rng, int n)
    {
        var c = new int[n];
        for (int k = 0; k < n; k++) c[k] = rng.Next(3);
        return c;
    }

    private sealed record CutContext(Workload W, int Cut, int StartedMax, int LastFlushDone)
    {
        /// <summary>Per byte, the promised value (last flushed op's, or the original); computed once per cut.</summary>
        public byte[] Base { get; } = ComputeBase(W, LastFlushDone);
    }

    private static byte[] ComputeBase(Workload w, int lastFlushDone)
    {
        var b = new byte[w.VSize];
        for (long x = 0; x < b.Length; x++) b[x] = w.Original(x);
        for (int o = 0; o < Math.Min(lastFlushDone, w.Ops.Count); o++)
        {
            var op = w.Ops[o];
            if (op.Kind == GuestKind.Write) op.Data.CopyTo(b.AsSpan((int)op.Off));
            else if (op.Kind is GuestKind.Discard or GuestKind.Zero) b.AsSpan((int)op.Off, (int)op.Len).Clear();
        }
        return b;
    }

    /// <summary>Applies a request (all of it, or the sectors picked by tornRng) to a device image.</summary>
    private static void Apply(byte[] dev, Rec r, Random? tornRng, int unused)
    {
        _ = unused;
        long end = r.Off + r.Len;
        for (long s = r.Off; s < end;)
        {
            long next = Math.Min(end, (s / 512 + 1) * 512);
            if (tornRng is null || tornRng.Next(2) == 0)
            {
                if (r.Kind == RecKind.Write) r.Data.AsSpan((int)(s - r.Off), (int)(next - s)).CopyTo(dev.AsSpan((int)s));
                else dev.AsSpan((int)s, (int)(next - s)).Clear();
            }
            s = next;
        }
    }

    private void CheckState(CutContext ctx, byte[][] durable, List<Rec> pending, int[] choice, Random rng, HarnessResult result)
    {
        var w = ctx.W;
        var meta = (byte[])durable[Meta].Clone();
        var data = (byte[])durable[Data].Clone();
        for (int k = 0; k < pending.Count; k++)
        {
            if (choice[k] == 0) continue;
            var r = pending[k];
            Apply(r.Dev == Meta ? meta : data, r, choice[k] == 2 ? rng : null, 0);
        }
        string Where() => $"crash-states {w.Describe()} | cut at trace #{ctx.Cut}, guest ops started <= #{ctx.StartedMax}, last completed flush #{ctx.LastFlushDone}, pending [{string.Join(", ", pending.Select((p, k) => $"{(p.Dev == Meta ? "meta" : "data")} {p.Kind} [{p.Off},+{p.Len}]:{"-WT"[choice[k]]}"))}]";
        byte[] first;
        try
        {
            first = OpenReadClose(w, meta, data);
        }
        catch (Exception e)
        {
            result.Fail($"{Where()}: recovery failed: {e.GetType().Name}: {e.Message}");
            return;
        }
        string? bad = Verify(ctx, first);
        if (bad is not null) { result.Fail($"{Where()}: {bad}"); return; }
        var meta1 = (byte[])meta.Clone();
        var data1 = (byte[])data.Clone();
        byte[] second;
        try
        {
            second = OpenReadClose(w, meta, data);
        }
        catch (Exception e)
        {
            result.Fail($"{Where()}: second recovery failed: {e.GetType().Name}: {e.Message}");
            return;
        }
        if (!second.AsSpan().SequenceEqual(first)) { result.Fail($"{Where()}: second open reads differently (recovery not idempotent)"); return; }
        if (!SameBesidesGeneration(meta, meta1) || !data.AsSpan().SequenceEqual(data1))
        {
            result.Fail($"{Where()}: open+close twice left different bytes than once (recovery not idempotent)");
            return;
        }
        result.Pass();
    }

    /// <summary>
    /// Equal metadata files, except that each open+close moves the header generation on (and between the
    /// slots): the current headers must match once the generation is set aside.
    /// </summary>
    private static bool SameBesidesGeneration(byte[] a, byte[] b)
    {
        var ha = HeaderSlots.Current(a);
        var hb = HeaderSlots.Current(b);
        long area = ha.HeaderArea;
        return area == hb.HeaderArea && a.AsSpan((int)area).SequenceEqual(b.AsSpan((int)area))
            && (ha with { Generation = 0 }).ToBytes().AsSpan().SequenceEqual((hb with { Generation = 0 }).ToBytes());
    }

    private static byte[] OpenReadClose(Workload w, byte[] meta, byte[] data)
    {
        var backing = w.Backing is null ? null : new MemoryDevice(w.Backing, readOnly: true);
        FvdImage img;
        try
        {
            img = MemImage.Attach(new MemoryDevice(meta), w.Inline ? null : new MemoryDevice(data), backing, readOnly: false);
        }
        catch (FvdException e) when (e.Kind == FvdErrorKind.CorruptImage && w.FailSync is not null)
        {
            // A failed sync marked the image corrupt: writable opens wait for fvd-img check -r; read it as is.
            backing = w.Backing is null ? null : new MemoryDevice(w.Backing, readOnly: true);
            img = MemImage.Attach(new MemoryDevice(meta, readOnly: true), w.Inline ? null : new MemoryDevice(data, readOnly: true), backing, readOnly: true);
        }
        try
        {
            var buf = new byte[w.VSize];
            img.Read(0, buf);
            return buf;
        }
        finally
        {
            img.Dispose();
        }
    }

    /// <summary>
    /// Per byte: the value of the last guest op that touched it and completed before the last completed guest
    /// flush (or the original content), or the value of any later op that had started by the cut.
    /// </summary>
    private static string? Verify(CutContext ctx, byte[] got)
    {
        var w = ctx.W;
        var ops = w.Ops;
        var baseBytes = ctx.Base;
        for (long x = 0; x < got.Length; x++)
        {
            int m = got.AsSpan((int)x).CommonPrefixLength(baseBytes.AsSpan((int)x));
            x += m;
            if (x >= got.Length) break;
            int promised = -1;
            for (int o = Math.Min(ctx.LastFlushDone, ops.Count) - 1; o >= 0; o--)
                if (ops[o].Touches(x)) { promised = o; break; }
            byte v = got[x];
            byte baseVal = promised >= 0 ? ops[promised].ValueAt(x) : w.Original(x);
            if (v == baseVal) continue;
            bool ok = false;
            for (int o = promised + 1; o <= ctx.StartedMax && o < ops.Count; o++)
                if (ops[o].Touches(x) && ops[o].ValueAt(x) == v) { ok = true; break; }
            if (ok) continue;
            string what = promised >= 0 ? $"the acknowledged and flushed op #{promised} wrote 0x{baseVal:x2}" : $"original content 0x{baseVal:x2}";
            bool everWritten = w.Original(x) == v || ops.Any(o => o.Touches(x) && o.ValueAt(x) == v);
            return $"byte {x} (sector {x / 512}) reads 0x{v:x2}: {(everWritten ? "lost write" : "garbage")}; {what}, no later started op wrote 0x{v:x2}";
        }
        return null;
    }
}
