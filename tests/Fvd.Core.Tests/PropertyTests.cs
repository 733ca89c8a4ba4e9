using Fvd.Core.Format;

namespace Fvd.Core.Tests;

/// <summary>Seeded property tests of the format types against naive models.</summary>
public class PropertyTests
{
    [Fact]
    public void BitmapMatchesBoolArrayModel()
    {
        var rng = new Random(99);
        for (int round = 0; round < 300; round++)
        {
            long blocks = rng.Next(4) switch { 0 => rng.Next(0, 10), 1 => rng.Next(60, 70), 2 => rng.Next(1, 300), _ => rng.Next(32760, 32800) };
            var bm = new Bitmap(blocks);
            var model = new bool[blocks];
            for (int op = 0; op < 20 && blocks > 0; op++)
            {
                long first = rng.NextInt64(blocks), count = rng.NextInt64(0, Math.Min(blocks - first, 130) + 1);
                bm.SetRange(first, count);
                for (long b = first; b < first + count; b++) model[b] = true;
            }
            for (long b = 0; b < blocks; b++) Assert.True(bm.Get(b) == model[b], $"round {round}: block {b}");
            Assert.Equal(model.LongCount(x => x), bm.CountSet());
            Assert.Equal(model.All(x => x), bm.AllSet);
            for (int q = 0; q < 30; q++)
            {
                long from = rng.NextInt64(blocks + 1), limit = rng.NextInt64(from, blocks + 5);
                bool v = rng.Next(2) == 0;
                long naive = from;
                while (naive < Math.Min(limit, blocks) && model[naive] != v) naive++;
                naive = Math.Min(naive, Math.Min(limit, blocks));
                Assert.True(naive == bm.NextWithValue(from, limit, v), $"round {round}: NextWithValue({from}, {limit}, {v})");
            }
            var bytes = bm.ToBytes();
            Assert.Equal((blocks + 7) / 8, bytes.Length);
            for (long b = 0; b < blocks; b++) Assert.Equal(model[b], (bytes[b / 8] & (1 << (int)(b % 8))) != 0);
            var back = Bitmap.FromBytes(blocks, bytes);
            Assert.Equal(bytes, back.ToBytes());
        }
    }

    [Fact]
    public void SetRangeRefusesOutOfRange()
    {
        var bm = new Bitmap(10);
        Assert.Throws<ArgumentOutOfRangeException>(() => bm.SetRange(5, 6));
        Assert.Throws<ArgumentOutOfRangeException>(() => bm.SetRange(-1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Bitmap(-1));
        bm.SetRange(10, 0);
    }

    [Fact]
    public void ConcurrentSetRangeLosesNoBits()
    {
        var bm = new Bitmap(64 * 100);
        Parallel.For(0, 8, t =>
        {
            for (long b = t; b < bm.Blocks; b += 8) bm.SetRange(b, 1);
        });
        Assert.True(bm.AllSet);
        Assert.Equal(bm.Blocks, bm.CountSet());
    }

    private static string RandomString(Random rng, int maxBytes)
    {
        var chars = new List<char>();
        int len = rng.Next(0, maxBytes / 4);
        for (int i = 0; i < len; i++)
            chars.Add(rng.Next(4) switch { 0 => (char)rng.Next(1, 128), 1 => 'é', 2 => '水', _ => (char)rng.Next('a', 'z' + 1) });
        return new string(chars.ToArray());
    }

    [Fact]
    public void AnyHeaderRoundTripsThroughBytes()
    {
        var rng = new Random(7);
        for (int i = 0; i < 500; i++)
        {
            var h = new FvdHeader
            {
                Flags = (HeaderFlags)rng.Next(),
                Incompatible = (IncompatibleFeatures)rng.NextInt64(),
                Compatible = (CompatibleFeatures)rng.NextInt64(),
                Autoclear = (AutoclearFeatures)rng.NextInt64(),
                VirtualSize = rng.NextInt64(long.MinValue, long.MaxValue),
                BlockSize = rng.Next(int.MinValue, int.MaxValue),
                BackingSize = rng.NextInt64(long.MinValue, long.MaxValue),
                BitmapOffset = rng.NextInt64(),
                BitmapLength = rng.NextInt64(),
                DataOffset = rng.NextInt64(),
                Prefetch = new PrefetchSettings
                {
                    StartDelaySeconds = rng.Next(int.MinValue, int.MaxValue), ChunkBytes = rng.Next(), MinReadKiBps = rng.Next(),
                    MaxReadKiBps = rng.Next(), MinWriteKiBps = rng.Next(), MaxWriteKiBps = rng.Next(), ThrottleMs = rng.Next(), MaxOutstandingCorBytes = rng.Next(),
                },
                BackingFormat = RandomString(rng, 15),
                BackingPath = RandomString(rng, 1023),
                DataFile = RandomString(rng, 1023),
                ReservedRegions = Enumerable.Range(0, 5).Select(_ => (rng.NextInt64(), rng.NextInt64())).ToArray(),
            };
            var b = h.ToBytes();
            var back = FvdHeader.Parse(b);
            Assert.Equal(b, back.ToBytes());
            Assert.Equal(h.BackingPath, back.BackingPath);
            Assert.Equal(h.DataFile, back.DataFile);
            Assert.Equal(h.BackingFormat, back.BackingFormat);
            Assert.Equal(h.VirtualSize, back.VirtualSize);
            Assert.Equal(h.Prefetch, back.Prefetch);
            Assert.Equal(h.ReservedRegions, back.ReservedRegions);
            // Validate of arbitrary values either passes or throws FvdException; nothing else.
            try { back.Validate(rng.NextInt64()); } catch (FvdException) { }
        }
    }
}
