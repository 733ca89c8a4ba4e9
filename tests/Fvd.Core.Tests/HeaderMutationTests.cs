using System.Buffers.Binary;
using Fvd.Core.Format;
using Fvd.Core.Image;
using Xunit.Abstractions;

namespace Fvd.Core.Tests;

/// <summary>
/// A small mutation fuzzer: random single-byte and whole-field mutations of a valid header (and bitmap).
/// Opening must either succeed (and then reads, maps and small writes work or fail with FvdException) or
/// fail with FvdException — never another exception type (docs/architecture.md §5).
/// Rerun one seed with FVD_MUTATION_SEED=N.
/// </summary>
public class HeaderMutationTests(ITestOutputHelper output)
{
    private static readonly (int Off, int Size)[] Fields =
    {
        (8, 4), (12, 4), (16, 4), (20, 4), (24, 8), (32, 8), (40, 8), (48, 8), (56, 4), (60, 4), (64, 8), (72, 8),
        (80, 8), (88, 8), (96, 4), (100, 4), (104, 4), (108, 4), (112, 4), (116, 4), (120, 4), (124, 4),
        (128, 8), (136, 8), (144, 8), (192, 8), (200, 8), (208, 8),
    };

    private static readonly long[] Interesting =
    {
        0, 1, -1, 2, 3, 7, 8, 511, 512, 513, 4095, 4096, 4097, 8192, 65536, 1 << 20, 16 << 20, 32 << 20, 40_000,
        39_999, 40_960, int.MaxValue, int.MinValue, uint.MaxValue, long.MaxValue, long.MinValue, long.MaxValue - 511,
        64L << 40, (64L << 40) + 512, 1L << 62, 10, 11, 9, 79, 80,
    };

    [Theory]
    [InlineData(false, 1)]
    [InlineData(true, 2)]
    public void RandomMutationsOnlyEverThrowFvdException(bool inline, int baseSeed)
    {
        int seed = int.TryParse(Environment.GetEnvironmentVariable("FVD_MUTATION_SEED"), out int s) ? s : baseSeed;
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        using var h = new HostileImage(inline);
        byte[] meta = File.ReadAllBytes(h.Image);
        byte[] data = inline ? Array.Empty<byte>() : File.ReadAllBytes(h.Data);
        int opened = 0, refused = 0;
        for (int iter = 0; iter < 1000; iter++)
        {
            var m = (byte[])meta.Clone();
            var what = new List<string>();
            // Header mutations land in copy 0, copy 1 or both (one bad copy alone is survived by design).
            int[] slots = rng.Next(3) switch { 0 => [0], 1 => [FvdHeader.Size], _ => [0, FvdHeader.Size] };
            int at = slots[rng.Next(slots.Length)];
            int count = rng.Next(1, 4);
            for (int k = 0; k < count; k++)
            {
                switch (rng.Next(4))
                {
                    case 0: // a random byte in the numeric fields
                    {
                        int off = at + rng.Next(0, 256);
                        m[off] = (byte)rng.Next(256);
                        what.Add($"byte[{off}]={m[off]}");
                        break;
                    }
                    case 1: // a random byte anywhere in the header or bitmap
                    {
                        int off = rng.Next(0, Math.Min(m.Length, 2 * FvdHeader.Size + 16));
                        m[off] ^= (byte)(1 << rng.Next(8));
                        what.Add($"flip[{off}]");
                        break;
                    }
                    case 2: // a whole field set to an interesting value
                    {
                        var (off, size) = Fields[rng.Next(Fields.Length)];
                        long v = Interesting[rng.Next(Interesting.Length)];
                        if (rng.Next(4) == 0) v += rng.Next(-3, 4);
                        foreach (int slot in slots)
                        {
                            if (size == 4) BinaryPrimitives.WriteInt32LittleEndian(m.AsSpan(slot + off), unchecked((int)v));
                            else BinaryPrimitives.WriteInt64LittleEndian(m.AsSpan(slot + off), v);
                        }
                        what.Add($"field[{off}]={v} in copies {string.Join("+", slots)}");
                        break;
                    }
                    default: // a string field byte
                    {
                        int[] starts = { 512, 1024, 2048 };
                        int off = at + starts[rng.Next(3)] + rng.Next(0, 20);
                        byte[] choices = { 0, (byte)':', (byte)'/', (byte)'.', 0xFF, 0xC3, 0x80, (byte)'a' };
                        m[off] = choices[rng.Next(choices.Length)];
                        what.Add($"str[{off}]={m[off]}");
                        break;
                    }
                }
            }
            if (rng.Next(10) != 0)
                foreach (int slot in slots) HostileImage.FixCrc(m, slot);
            if (rng.Next(8) == 0) // truncate or extend the file
            {
                int len = rng.Next(3) switch { 0 => rng.Next(0, 4200), 1 => rng.Next(4096, m.Length + 1), _ => m.Length + rng.Next(1, 10000) };
                var t = new byte[len];
                m.AsSpan(0, Math.Min(len, m.Length)).CopyTo(t);
                m = t;
                what.Add($"len={len}");
            }
            File.WriteAllBytes(h.Image, m);
            if (!inline && new FileInfo(h.Data).Length != data.Length) File.WriteAllBytes(h.Data, data);
            bool ro = rng.Next(4) != 0;
            string desc = $"seed {seed} iteration {iter} ({(ro ? "ro" : "rw")}): {string.Join(", ", what)}";
            try
            {
                using var img = FvdImage.Open(h.Image, new FvdOpenOptions { ReadOnly = ro });
                opened++;
                Exercise(img, rng);
            }
            catch (FvdException)
            {
                refused++;
            }
            catch (Exception e)
            {
                Assert.Fail($"{desc}: {e.GetType().Name}: {e.Message}\n{e.StackTrace}");
            }
        }
        output.WriteLine($"opened {opened}, refused {refused}");
        Assert.True(opened > 50, $"only {opened} mutated images opened; the mutations are too destructive to test much");
        Assert.True(refused > 200, $"only {refused} mutated images were refused");
    }

    private static void Exercise(FvdImage img, Random rng)
    {
        for (int i = 0; i < 3; i++)
        {
            long off = rng.NextInt64(img.Length);
            int len = (int)Math.Min(img.Length - off, rng.Next(1, 70_000));
            try { img.Read(off, new byte[len]); } catch (FvdException) { }
        }
        try { _ = img.Map().Take(20).ToList(); } catch (FvdException) { }
        try { img.GetExtent(0, long.MaxValue); } catch (FvdException) { }
        if (!img.IsReadOnly)
        {
            long off = rng.NextInt64(img.Length);
            int len = (int)Math.Min(img.Length - off, rng.Next(1, 5000));
            try { img.Write(off, new byte[len]); img.Flush(); } catch (FvdException) { }
        }
    }
}
