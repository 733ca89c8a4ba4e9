using System.Security.Cryptography;
using Fvd.Core.Format;
using Fvd.Core.Image;
using Fvd.Core.Io;
using Xunit.Abstractions;

namespace Fvd.Core.Tests;

/// <summary>
/// Crash points at the device layer: before every operation on the data device, build the worst crash image
/// (metadata file as it is now, i.e. every metadata write survived; data file as of its last flush, i.e.
/// every unflushed data write lost), open it and check each sector holds a value it held at some time.
/// Also failure injection: a failed data write sets no bit; a failed data sync is final (no bit, no clean flag).
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
                if (o.Op == op && failing()) throw new FvdException(FvdErrorKind.Io, $"injected {op} failure");
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

    private static bool BitOnDisk(string p, int b)
    {
        var m = DurabilityTests.ReadShared(p);
        return (m[HeaderSlots.Current(m).BitmapOffset + b / 8] & (1 << (b % 8))) != 0;
    }

    [Fact]
    public void FailedDataSyncIsFinalAndNoBitReachesTheDisk()
    {
        // Linux reports a writeback error once: the retry "succeeds" over data that never reached the disk.
        int failures = 1;
        using var image = ImageFailingOn(4, RecordedOp.Flush, () => failures-- > 0, out var backing, out string img);
        image.Write(1024 + 3, new byte[] { 1, 2, 3 });
        Assert.Equal(FvdErrorKind.Io, Assert.Throws<FvdException>(() => image.Flush()).Kind);
        Assert.False(BitOnDisk(img, 2));
        // The device works again, but the data of that flush may be gone: every later flush fails too.
        var again = Assert.Throws<FvdException>(() => image.Flush());
        Assert.Equal(FvdErrorKind.Io, again.Kind);
        Assert.Contains("check -r", again.Message);
        Assert.False(BitOnDisk(img, 2));
        image.Write(8192, new byte[512]);
        Assert.Equal(FvdErrorKind.Io, Assert.Throws<FvdException>(() => image.Flush()).Kind);
        Assert.False(BitOnDisk(img, 16));
        // Close fails as well and leaves the image unclean and marked for a check.
        Assert.Equal(FvdErrorKind.Io, Assert.Throws<FvdException>(() => image.Dispose()).Kind);
        var h = HeaderSlots.Current(DurabilityTests.ReadShared(img));
        Assert.Equal(0, (int)(h.Flags & HeaderFlags.CleanShutdown));
        Assert.NotEqual(0, (int)(h.Incompatible & IncompatibleFeatures.Corrupt));
        Assert.Equal(FvdErrorKind.CorruptImage, Assert.Throws<FvdException>(() => FvdImage.Open(img)).Kind);

        // Recovery: check -r all clears the mark; blocks 2 and 16 read from the backing again (their data was
        // never durable, and no flush ever reported it was).
        var report = ImageChecker.Check(img, RepairMode.All);
        Assert.Equal(0, report.Errors);
        Assert.Equal(0, ImageChecker.Check(img).ExitCode);
        using var re = FvdImage.Open(img);
        Assert.False(re.Bitmap.Get(2) || re.Bitmap.Get(16));
        var got = new byte[40_000];
        re.Read(0, got);
        Assert.Equal(backing, got);
    }

    [Fact]
    public void TornHeaderWriteOpensWithTheOldOrTheNewHeader()
    {
        // Detach rewrites fields in three sectors of the header (sizes, backing format, backing path): every
        // subset of them reaching the disk must leave an image that opens, with the old or the new header.
        var backing = new byte[40_000];
        new Random(5).NextBytes(backing);
        File.WriteAllBytes(_dir.File("base.raw"), backing);
        string img = _dir.File("t.fvd");
        FvdImage.Create(img, new FvdCreateOptions { VirtualSize = 65536, BackingFile = "base.raw", BlockSize = 512 });
        string crashDir = _dir.File("crash");
        Directory.CreateDirectory(crashDir);
        File.Copy(_dir.File("base.raw"), Path.Combine(crashDir, "base.raw"));
        string crash = Path.Combine(crashDir, "t.fvd");
        using var image = FvdImage.Open(img);
        image.Write(0, backing); // every block local, so detach is allowed
        image.Flush();
        File.Copy(_dir.File("t.data"), Path.Combine(crashDir, "t.data"));
        var before = DurabilityTests.ReadShared(img);
        var oldHeader = image.Header;
        image.DetachBacking();
        var newHeader = image.Header;
        var after = DurabilityTests.ReadShared(img);
        var sectors = Enumerable.Range(0, Math.Min(before.Length, after.Length) / 512)
            .Where(i => !before.AsSpan(i * 512, 512).SequenceEqual(after.AsSpan(i * 512, 512))).ToList();
        Assert.InRange(sectors.Count, 3, 8);
        Assert.Equal(sectors[0] / 8, sectors[^1] / 8); // within one header slot
        for (int mask = 0; mask < 1 << sectors.Count; mask++)
        {
            var torn = (byte[])before.Clone();
            for (int k = 0; k < sectors.Count; k++)
                if ((mask >> k & 1) != 0) after.AsSpan(sectors[k] * 512, 512).CopyTo(torn.AsSpan(sectors[k] * 512));
            File.WriteAllBytes(crash, torn);
            using var c = FvdImage.Open(crash, new FvdOpenOptions { ReadOnly = true });
            Assert.True(c.Header.ToBytes().AsSpan().SequenceEqual(oldHeader.ToBytes()) || c.Header.ToBytes().AsSpan().SequenceEqual(newHeader.ToBytes()),
                $"sectors {string.Join(",", sectors)}, mask {mask}: the header opened is neither the old nor the new one");
            var got = new byte[40_000];
            c.Read(0, got);
            Assert.Equal(backing, got);
        }
    }

    [Fact]
    public void FailedMetadataSyncIsFinalAndTheImageIsNeverMarkedClean()
    {
        var backing = new byte[40_000];
        new Random(6).NextBytes(backing);
        File.WriteAllBytes(_dir.File("base.raw"), backing);
        string img = _dir.File("t.fvd");
        FvdImage.Create(img, new FvdCreateOptions { VirtualSize = 65536, BackingFile = "base.raw", BlockSize = 512 });
        int failures = 0;
        var meta = new RecordingDevice(FileDevice.Open(img, readOnly: false))
        {
            Before = o => { if (o.Op == RecordedOp.Flush && failures-- > 0) throw new FvdException(FvdErrorKind.Io, "injected metadata fdatasync failure"); },
        };
        var image = FvdImage.Attach(img, meta, FileDevice.Open(_dir.File("t.data"), readOnly: false),
            FileDevice.Open(_dir.File("base.raw"), readOnly: true), _dir.File("base.raw"), readOnly: false);
        image.Write(1024, new byte[512]);
        failures = 1;
        Assert.Equal(FvdErrorKind.Io, Assert.Throws<FvdException>(() => image.Flush()).Kind);
        // The bits may or may not have reached the disk; the metadata file works again, but nothing may
        // now claim they did.
        Assert.Equal(FvdErrorKind.Io, Assert.Throws<FvdException>(() => image.Flush()).Kind);
        Assert.Equal(FvdErrorKind.Io, Assert.Throws<FvdException>(() => image.SetHeaderFlags(HeaderFlags.CopyOnRead, 0)).Kind);
        Assert.Equal(FvdErrorKind.Io, Assert.Throws<FvdException>(() => image.Dispose()).Kind);
        var h = HeaderSlots.Current(DurabilityTests.ReadShared(img));
        Assert.Equal(HeaderFlags.None, h.Flags & (HeaderFlags.CleanShutdown | HeaderFlags.CopyOnRead));
        Assert.Equal(IncompatibleFeatures.Corrupt, h.Incompatible & IncompatibleFeatures.Corrupt);
        Assert.Equal(0, ImageChecker.Check(img, RepairMode.All).Errors);
        using var re = FvdImage.Open(img);
        Assert.False(re.WasUnclean);
    }

    [Fact]
    public void PrefetchAfterAFailedSyncNeverFinishes()
    {
        int failures = 1;
        var image = ImageFailingOn(7, RecordedOp.Flush, () => failures-- > 0, out _, out string img);
        var e = Assert.Throws<FvdException>(() => image.PrefetchNow());
        Assert.Equal(FvdErrorKind.Io, e.Kind);
        // A second run must not retry its way to "finished" over data whose sync failed.
        Assert.Throws<FvdException>(() => image.PrefetchNow());
        Assert.Equal(HeaderFlags.None, HeaderSlots.Current(DurabilityTests.ReadShared(img)).Flags & HeaderFlags.PrefetchFinished);
        Assert.False(BitOnDisk(img, 0));
        Assert.Equal(FvdErrorKind.Io, Assert.Throws<FvdException>(() => image.Dispose()).Kind);
    }

    [Fact]
    public async Task PrefetchWhoseSavesFailStopsWithTheErrorInsteadOfHanging()
    {
        // The write stage dies on its first save; the read stage, small chunks ahead, must not wait forever
        // on the full pipe between them.
        using var image = ImageFailingOn(8, RecordedOp.Write, () => true, out _, out _);
        var limits = image.Header.Prefetch with { ChunkBytes = 512, MinReadKiBps = 0, MinWriteKiBps = 0 };
        var run = Task.Run(() => image.PrefetchNow(limits));
        Assert.True(await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(60))) == run, "prefetch hung after its save failed");
        var e = await Assert.ThrowsAsync<FvdException>(() => run);
        Assert.Equal(FvdErrorKind.Io, e.Kind);
        Assert.Contains("injected Write failure", e.Message);
        Assert.Equal(0, image.Bitmap.CountSet());
    }

    [Fact]
    public void FlushWithNothingWrittenSinceTheLastOneSkipsTheDataSync()
    {
        using var image = ImageFailingOn(9, RecordedOp.Flush, () => false, out _, out _);
        int dataSyncs = 0;
        image.WrapDataDeviceForTests(inner => new RecordingDevice(inner)
        {
            Before = o => { if (o.Op == RecordedOp.Flush) dataSyncs++; },
        });
        image.Write(2048, new byte[1024]);   // whole blocks over the backing: bits set
        image.Flush();
        Assert.Equal(1, dataSyncs);
        image.Flush();                        // nothing written since: an FSYNC after an O_DSYNC write
        var buf = new byte[4096];
        image.Read(0, buf);                   // reads write nothing
        image.Flush();
        Assert.Equal(1, dataSyncs);
        image.Write(50_000, new byte[512]);  // past the backing: no bit, but the data must still be synced
        image.Flush();
        Assert.Equal(2, dataSyncs);
    }
}

