// The per-request overhead counters: opcode classes, the log-scale histogram behind the median, the JSON.
using System.Diagnostics;
using System.Text.Json;
using static Fvd.Fuse.FuseProtocol;

namespace Fvd.Fuse.Tests;

public sealed class RequestStatsTests
{
    private static long Ticks(long ns) => ns * Stopwatch.Frequency / 1_000_000_000;

    [Fact]
    public void Buckets_are_ordered_and_each_duration_falls_into_the_bucket_whose_range_holds_it()
    {
        int last = -1;
        foreach (long ns in new long[] { 0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 100, 1000, 4095, 4096, 1L << 40, long.MaxValue / 2 })
        {
            int b = RequestStats.Bucket(ns);
            Assert.True(b >= last, $"{ns}");
            Assert.True(RequestStats.BucketLow(b) <= ns, $"{ns}: low {RequestStats.BucketLow(b)}");
            Assert.True(RequestStats.BucketLow(b + 1) > ns, $"{ns}: next low {RequestStats.BucketLow(b + 1)}");
            last = b;
        }
    }

    [Fact]
    public void Counts_time_and_median_per_class()
    {
        var s = new RequestStats();
        foreach (long ns in new long[] { 10_000, 11_000, 12_000, 1_000_000_000 }) s.Record(WRITE, Ticks(ns));
        s.Record(READ, Ticks(5_000));
        s.Record(FSYNC, Ticks(2_000_000));
        s.Record(GETATTR, Ticks(1_000));
        s.Record(LOOKUP, Ticks(1_000));

        Assert.Equal(4, s.Count(RequestClass.Write));
        Assert.Equal(1, s.Count(RequestClass.Read));
        Assert.Equal(1, s.Count(RequestClass.Fsync));
        Assert.Equal(2, s.Count(RequestClass.Other));
        Assert.InRange(s.TotalNs(RequestClass.Write), 1_000_032_000, 1_000_034_000);
        // One slow outlier moves the mean to 250 ms; the median stays with the typical request.
        Assert.InRange(s.MedianNs(RequestClass.Write), 9_000, 13_000);
        Assert.InRange(s.MedianNs(RequestClass.Read), 4_000, 6_000);
        Assert.Equal(0, new RequestStats().MedianNs(RequestClass.Write));
    }

    [Fact]
    public void Json_has_every_class_with_count_total_mean_and_median()
    {
        var s = new RequestStats();
        s.Record(WRITE, Ticks(20_000));
        s.Record(WRITE, Ticks(40_000));
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            s.WriteJson(w);
            w.WriteEndObject();
        }
        var req = JsonDocument.Parse(ms.ToArray()).RootElement.GetProperty("requests");
        Assert.Equal(["read", "write", "fsync", "other"], req.EnumerateObject().Select(p => p.Name));
        var write = req.GetProperty("write");
        Assert.Equal(2, write.GetProperty("count").GetInt64());
        Assert.InRange(write.GetProperty("mean_ns").GetInt64(), 29_000, 31_000);
        Assert.Equal(0, req.GetProperty("read").GetProperty("count").GetInt64());
    }
}
