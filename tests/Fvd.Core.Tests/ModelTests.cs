using Fvd.Core.Image;

namespace Fvd.Core.Tests;

/// <summary>
/// Seeded random operations applied to an FVD image and to a flat byte array; every read must agree.
/// A failure names its seed; rerun one seed with FVD_SEED=N.
/// </summary>
public class ModelTests
{
    public static IEnumerable<object[]> Seeds()
    {
        var env = Environment.GetEnvironmentVariable("FVD_SEED");
        if (env is not null) { yield return new object[] { int.Parse(env) }; yield break; }
        int n = int.Parse(Environment.GetEnvironmentVariable("FVD_MODEL_SEEDS") ?? "200");
        for (int i = 1; i <= n; i++) yield return new object[] { i };
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void RandomOperationsMatchFlatModel(int seed)
    {
        var rng = new Random(seed);
        using var dir = new TempDir();
        int bs = 512 << rng.Next(0, 5);
        long backingLen = rng.Next(1, 64) * 1024L + (rng.Next(2) == 0 ? 0 : rng.Next(1, 512));
        backingLen = backingLen / 512 * 512 == backingLen ? backingLen : backingLen; // odd sizes allowed
        long vsize = (backingLen + rng.Next(0, 64) * 1024L + 511) / 512 * 512;
        var backing = new byte[backingLen];
        rng.NextBytes(backing);
        // Zero regions and holes so zero-aware creation has something to find.
        for (int z = 0; z < 3; z++)
        {
            int at = rng.Next((int)backingLen), n = Math.Min(rng.Next(0, 8192), (int)backingLen - at);
            Array.Clear(backing, at, n);
        }
        File.WriteAllBytes(dir.File("base.raw"), backing);
        var model = new byte[vsize];
        Array.Copy(backing, model, Math.Min(backingLen, vsize));
        string img = dir.File("t.fvd");
        FvdImage.Create(img, new FvdCreateOptions { VirtualSize = vsize, BackingFile = "base.raw", BlockSize = bs, InlineData = rng.Next(4) == 0 });
        var image = FvdImage.Open(img);
        try
        {
            for (int step = 0; step < 150; step++)
            {
                long off = rng.Next((int)vsize);
                int len = (int)Math.Min(vsize - off, rng.Next(0, 3) == 0 ? rng.Next(1, 3 * bs) : rng.Next(1, 600));
                switch (rng.Next(10))
                {
                    case < 4:
                        var data = new byte[len];
                        rng.NextBytes(data);
                        image.Write(off, data);
                        data.CopyTo(model, off);
                        break;
                    case 4:
                        image.Discard(off, len);
                        Array.Clear(model, (int)off, len);
                        break;
                    case 5:
                        image.WriteZeroes(off, len);
                        Array.Clear(model, (int)off, len);
                        break;
                    case 6:
                        image.Flush();
                        break;
                    case 7:
                        image.Dispose();
                        image = FvdImage.Open(img, new FvdOpenOptions { ReadOnly = rng.Next(4) == 0 });
                        if (image.IsReadOnly) { image.Dispose(); image = FvdImage.Open(img); }
                        break;
                    default:
                        var got = new byte[len];
                        image.Read(off, got);
                        { int d = got.AsSpan().CommonPrefixLength(model.AsSpan((int)off, len)); Assert.True(d == len, $"seed {seed} step {step}: read [{off},+{len}) differs at {off + d} (bs {bs}, backing {backingLen}, vsize {vsize})"); }
                        break;
                }
            }
            var all = new byte[vsize];
            image.Read(0, all);
            Assert.True(all.AsSpan().SequenceEqual(model), $"seed {seed}: final image differs from model");
        }
        finally
        {
            image.Dispose();
        }
    }
}
