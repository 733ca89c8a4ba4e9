using System.Security.Cryptography;
using Fvd.Core.Image;
using Fvd.Core.Io;
using Xunit.Abstractions;

namespace Fvd.Core.Tests;

/// <summary>
/// Crash points at the device layer: before every operation on the data device, build the worst crash image
/// (metadata file as it is now, i.e. every metadata write survived; data file as of its last flush, i.e.
/// every unflushed data write lost), open it and check each sector holds a value it held at some time.
/// Also failure injection: a failed data write sets no bit, a failed data flush leaves bits dirty.
/// </summary>
public sealed class DeviceCrashTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = new();
    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(512, 1)]
    [InlineData(4096, 2)]
    public void EveryCrashPointOpensWithHistoricalContent(int bs, int seed)
    {
        output.WriteLine($"seed {seed}");
        const int Len = 64 * 1024, BackingLen = 40_000;
        var rng = new Random(seed);
        var backing = new byte[BackingLen];
        rng.NextBytes(backing); // no zero blocks: zeros on read would be garbage
        File.WriteAllBytes(_dir.File("base.raw"), backing);
        string img = _dir.File("t.fvd"), data = _dir.File("t.data");
        FvdImage.Create(img, new FvdCreateOptions { VirtualSize = Len, BackingFile = "base.raw", BlockSize = bs });
        var model = new byte[Len];
        backing.CopyTo(model, 0);
        // Every value each sector ever had.
        var history = new HashSet<string>[Len / 512];
        for (int s = 0; s < history.Length; s++) history[s] = new() { Hash(model, s) };
        byte[] durableData = DurabilityTests.ReadShared(data);
        int crashes = 0;
        string crashDir = _dir.File("crash");
        Directory.CreateDirectory(crashDir);
        File.WriteAllBytes(Path.Combine(crashDir, "base.raw"), backing);

        void CrashAndCheck(string when)
        {
            crashes++;
            File.WriteAllBytes(Path.Combine(crashDir, "t.fvd"), DurabilityTests.ReadShared(img));
            File.WriteAllBytes(Path.Combine(crashDir, "t.data"), durableData);
            using var c = FvdImage.Open(Path.Combine(crashDir, "t.fvd"), new FvdOpenOptions { ReadOnly = true });
            var got = new byte[Len];
            c.Read(0, got);
            for (int s = 0; s < history.Length; s++)
                Assert.True(history[s].Contains(Hash(got, s)), $"seed {seed}, crash {when}: sector {s} (offset {s * 512}) holds a value it never had");
        }

        using (var image = FvdImage.Open(img))
        {
            image.WrapDataDeviceForTests(inner => new RecordingDevice(inner)
            {
                Before = op => CrashAndCheck($"before data {op.Op} [{op.Offset},+{op.Length})"),
                After = op => { if (op.Op == RecordedOp.Flush) durableData = DurabilityTests.ReadShared(data); },
            });
            for (int step = 0; step < 60; step++)
            {
                if (rng.Next(5) == 0)
                {
                    image.Flush();
                    CrashAndCheck($"after flush at step {step}");
                    continue;
                }
                long off = rng.Next(Len);
                int n = (int)Math.Min(Len - off, rng.Next(1, 3 * bs));
                var d = new byte[n];
                rng.NextBytes(d);
                image.Write(off, d);
                d.CopyTo(model, off);
                for (long s = off / 512; s <= (off + n - 1) / 512; s++) history[s].Add(Hash(model, (int)s));
            }
            image.Flush();
            CrashAndCheck("final flush");
            // After the final flush the crash image equals the model exactly.
            var c = new byte[Len];
            using (var copy = FvdImage.Open(Path.Combine(crashDir, "t.fvd"), new FvdOpenOptions { ReadOnly = true })) copy.Read(0, c);
            Assert.True(c.AsSpan().SequenceEqual(model), $"seed {seed}: after the final flush the crash image is not the model");
        }
        output.WriteLine($"{crashes} crash points checked");
    }

    private static string Hash(byte[] b, int sector) => Convert.ToHexString(SHA256.HashData(b.AsSpan(sector * 512, 512)));

    private sealed class InjectedFailure(string m) : Exception(m);

    /// <summary>An image over a 40,000-byte random backing whose data device fails `op` while failing() is true.</summary>
    private FvdImage ImageFailingOn(int seed, RecordedOp op, Func<bool> failing, out byte[] backing, out string img)
    {
        backing = new byte[40_000];
        new Random(seed).NextBytes(backing);
        File.WriteAllBytes(_dir.File("base.raw"), backing);
        img = _dir.File("t.fvd");
        FvdImage.Create(img, new FvdCreateOptions { VirtualSize = 65536, BackingFile = "base.raw", BlockSize = 512 });
        var image = FvdImage.Open(img);
        image.WrapDataDeviceForTests(inner => new RecordingDevice(inner)
        {
            Before = o =>
            {
                if (failing() && o.Op == op) throw new FvdException(FvdErrorKind.Io, $"injected {op} failure");
            },
        });
        return image;
    }

    [Fact]
    public void FailedDataWriteSetsNoBit()
    {
        bool fail = true;
        using var image = ImageFailingOn(3, RecordedOp.Write, () => fail, out var backing, out _);
        Assert.Equal(FvdErrorKind.Io, Assert.Throws<FvdException>(() => image.Write(700, new byte[10])).Kind);     // merge path
        Assert.Equal(FvdErrorKind.Io, Assert.Throws<FvdException>(() => image.Write(2048, new byte[1024])).Kind);  // direct path
        Assert.Equal(0, image.Bitmap.CountSet());
        var got = new byte[40_000];
        image.Read(0, got);
        Assert.Equal(backing, got); // still the backing's content
        fail = false;
        image.Write(700, new byte[10]);
        Assert.True(image.Bitmap.Get(1));
    }

    [Fact]
    public void FailedDataFlushLeavesBitsDirtyForTheNextFlush()
    {
        bool fail = true;
        using var image = ImageFailingOn(4, RecordedOp.Flush, () => fail, out _, out string img);
        image.Write(1024 + 3, new byte[] { 1, 2, 3 });
        Assert.Equal(FvdErrorKind.Io, Assert.Throws<FvdException>(() => image.Flush()).Kind);
        static bool BitOnDisk(string p, int b) => (DurabilityTests.ReadShared(p)[4096 + b / 8] & (1 << (b % 8))) != 0;
        Assert.False(BitOnDisk(img, 2));
        fail = false;
        image.Flush();
        Assert.True(BitOnDisk(img, 2));
    }
}
