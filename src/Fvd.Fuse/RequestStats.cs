// Per-request daemon overhead: the time from reading a request off /dev/fuse to writing its reply, per opcode
// class. Always on: two clock reads and three interlocked adds per request, no allocation. A log-scale
// histogram gives a median too: on a loaded machine preemption makes the mean swing far more than the median.
using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Text.Json;
using static Fvd.Fuse.FuseProtocol;

namespace Fvd.Fuse;

/// <summary>Opcode classes the counters are kept for.</summary>
public enum RequestClass { Read, Write, Fsync, Other }

/// <summary>Counts and total time of the requests the transport served itself, mount-wide.</summary>
public sealed class RequestStats
{
    // One cache line per class, so threads counting different classes do not share a line.
    [StructLayout(LayoutKind.Explicit, Size = 64)]
    private struct Counter
    {
        [FieldOffset(0)] public long Count;
        [FieldOffset(8)] public long Ticks;
    }

    private readonly Counter[] _counters = new Counter[4];
    // Per class: 4 buckets per power of two of the duration in ns (bucket upper bounds 19% apart at most).
    private const int SubBits = 2, Buckets = 64 << SubBits;
    private readonly long[] _histogram = new long[4 * Buckets];

    public static RequestClass Classify(uint opcode) => opcode switch
    {
        READ => RequestClass.Read,
        WRITE => RequestClass.Write,
        FSYNC => RequestClass.Fsync,
        _ => RequestClass.Other,
    };

    /// <summary>Adds one request that took <paramref name="ticks"/> Stopwatch ticks.</summary>
    public void Record(uint opcode, long ticks)
    {
        ref var c = ref _counters[(int)Classify(opcode)];
        Interlocked.Increment(ref c.Count);
        Interlocked.Add(ref c.Ticks, ticks);
        Interlocked.Increment(ref _histogram[(int)Classify(opcode) * Buckets + Bucket(ToNs(ticks))]);
    }

    private static long ToNs(long ticks) => (long)(ticks * (1e9 / Stopwatch.Frequency));

    internal static int Bucket(long ns)
    {
        if (ns < 1 << SubBits) return (int)Math.Max(ns, 0);
        int log = 63 - BitOperations.LeadingZeroCount((ulong)ns);
        return ((log - SubBits + 1) << SubBits) + (int)((ns >> (log - SubBits)) & ((1 << SubBits) - 1));
    }

    /// <summary>Smallest duration that falls into the bucket.</summary>
    internal static long BucketLow(int bucket)
    {
        if (bucket < 1 << SubBits) return bucket;
        int log = (bucket >> SubBits) + SubBits - 1;
        return (1L << log) + ((long)(bucket & ((1 << SubBits) - 1)) << (log - SubBits));
    }

    /// <summary>The median duration of the class in ns (midpoint of its histogram bucket); 0 without requests.</summary>
    public long MedianNs(RequestClass cls)
    {
        var h = _histogram.AsSpan((int)cls * Buckets, Buckets);
        long total = 0;
        Span<long> counts = stackalloc long[Buckets];
        for (int b = 0; b < Buckets; b++) total += counts[b] = Volatile.Read(ref h[b]);
        long seen = 0;
        for (int b = 0; b < Buckets; b++)
        {
            seen += counts[b];
            if (total > 0 && seen * 2 >= total) return b + 1 < Buckets ? (BucketLow(b) + BucketLow(b + 1)) / 2 : BucketLow(b);
        }
        return 0;
    }

    public long Count(RequestClass cls) => Volatile.Read(ref _counters[(int)cls].Count);

    /// <summary>Total time of the class's requests in nanoseconds.</summary>
    public long TotalNs(RequestClass cls) => ToNs(Volatile.Read(ref _counters[(int)cls].Ticks));

    /// <summary>Writes "requests": { "read": { count, total_ns, mean_ns, median_ns }, ... }.</summary>
    public void WriteJson(Utf8JsonWriter w)
    {
        ArgumentNullException.ThrowIfNull(w);
        w.WriteStartObject("requests");
        foreach (var cls in Enum.GetValues<RequestClass>())
        {
            long n = Count(cls), ns = TotalNs(cls);
            w.WriteStartObject(cls.ToString().ToLowerInvariant());
            w.WriteNumber("count", n);
            w.WriteNumber("total_ns", ns);
            w.WriteNumber("mean_ns", n == 0 ? 0 : ns / n);
            w.WriteNumber("median_ns", MedianNs(cls));
            w.WriteEndObject();
        }
        w.WriteEndObject();
    }
}
