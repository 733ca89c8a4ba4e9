using System.Diagnostics;
using Fvd.Core.Format;
using Fvd.Core.Image;

namespace Fvd.Core.Tests;

/// <summary>Copy-on-read and prefetch (paper 3.3.4, 3.4).</summary>
public class BackgroundTests
{
    private static byte[] MakeBacking(TempDir dir, int size, int seed)
    {
        var b = new byte[size];
        new Random(seed).NextBytes(b);
        File.WriteAllBytes(dir.File("base.raw"), b);
        return b;
    }

    private static FvdImage CreateOver(TempDir dir, long vsize, int bs = 4096, PrefetchSettings? p = null, bool cor = true)
    {
        string img = dir.File("t.fvd");
        FvdImage.Create(img, new FvdCreateOptions { VirtualSize = vsize, BackingFile = "base.raw", BlockSize = bs, CopyOnRead = cor, Prefetch = p ?? PrefetchSettings.Default });
        return FvdImage.Open(img);
    }

    [Fact]
    public void SecondPassReadsNothingFromBacking()
    {
        using var dir = new TempDir();
        var backing = MakeBacking(dir, 1 << 20, 1);
        using var img = CreateOver(dir, 2 << 20);
        img.StartBackgroundWork();
        Assert.True(img.CopyOnReadEnabled);
        var buf = new byte[1 << 20];
        // Read in odd-sized pieces so widening to blocks is exercised.
        for (int off = 0; off < buf.Length;)
        {
            int n = Math.Min(777 * 13, buf.Length - off);
            img.Read(off, buf.AsSpan(off, n));
            off += n;
            Assert.True(img.WaitForCopyOnRead(TimeSpan.FromSeconds(10)));
        }
        Assert.Equal(backing, buf);
        long afterFirst = img.Status.BackingBytesRead;
        Assert.True(afterFirst >= backing.Length);
        Assert.True(img.Status.CopyOnReadBytesSaved >= backing.Length);
        var again = new byte[1 << 20];
        img.Read(0, again);
        Assert.Equal(backing, again);
        Assert.Equal(afterFirst, img.Status.BackingBytesRead); // second pass: 0 bytes from the backing
    }

    [Fact]
    public void CopyOnReadNeverOverwritesNewerGuestWrites()
    {
        for (int seed = 1; seed <= 20; seed++)
        {
            using var dir = new TempDir();
            MakeBacking(dir, 256 << 10, seed);
            var img = CreateOver(dir, 256 << 10, bs: 4096);
            img.StartBackgroundWork();
            var rng = new Random(seed);
            // Each writer owns a distinct 512-byte sector in each of 16 blocks; readers hammer the same blocks.
            int writers = 4;
            var expected = new Dictionary<long, byte>();
            var tasks = new List<Thread>();
            for (int w = 0; w < writers; w++)
            {
                int id = w;
                tasks.Add(new Thread(() =>
                {
                    for (int blk = 0; blk < 16; blk++)
                    {
                        var data = new byte[512];
                        Array.Fill(data, (byte)(id * 16 + blk + 1));
                        img.Write(blk * 4096L + id * 512, data);
                    }
                }));
            }
            for (int r = 0; r < 3; r++)
                tasks.Add(new Thread(() =>
                {
                    var buf = new byte[64 << 10];
                    for (int i = 0; i < 20; i++) img.Read(0, buf);
                }));
            tasks.ForEach(t => t.Start());
            tasks.ForEach(t => t.Join());
            Assert.True(img.WaitForCopyOnRead(TimeSpan.FromSeconds(10)));
            var check = new byte[512];
            for (int w = 0; w < writers; w++)
                for (int blk = 0; blk < 16; blk++)
                {
                    img.Read(blk * 4096L + w * 512, check);
                    Assert.True(check.All(b => b == (byte)(w * 16 + blk + 1)), $"seed {seed}: writer {w} block {blk} lost its write");
                }
            img.Dispose();
            using var re = FvdImage.Open(dir.File("t.fvd"));
            for (int w = 0; w < writers; w++)
                for (int blk = 0; blk < 16; blk++)
                {
                    re.Read(blk * 4096L + w * 512, check);
                    Assert.True(check.All(b => b == (byte)(w * 16 + blk + 1)), $"seed {seed}: after reopen writer {w} block {blk} lost");
                }
        }
    }

    [Fact]
    public void PrefetchFinishesAndDetachesBacking()
    {
        using var dir = new TempDir();
        var backing = MakeBacking(dir, (3 << 20) + 1000, 7);
        string path = dir.File("t.fvd");
        using (var img = CreateOver(dir, 8 << 20, p: PrefetchSettings.Default with { StartDelaySeconds = 0 }))
        {
            img.Write(100_000, new byte[] { 1, 2, 3 });
            img.StartBackgroundWork();
            var sw = Stopwatch.StartNew();
            while (img.Status.Prefetch != PrefetchState.Finished && sw.Elapsed < TimeSpan.FromSeconds(60)) Thread.Sleep(20);
            Assert.Equal(PrefetchState.Finished, img.Status.Prefetch);
            Assert.True(img.Status.Finished);
            Assert.Equal(img.Status.BlocksTotal, img.Status.BlocksLocal);
            // Each backing byte read once (the one written block was never read).
            Assert.True(img.Status.BackingBytesRead <= backing.Length, $"read {img.Status.BackingBytesRead} of {backing.Length}");
        }
        var hdr = HeaderSlots.Current(File.ReadAllBytes(path));
        Assert.True((hdr.Flags & HeaderFlags.PrefetchFinished) != 0);
        File.Delete(dir.File("base.raw")); // no longer needed
        using var re = FvdImage.Open(path);
        var all = new byte[backing.Length];
        re.Read(0, all);
        backing[100_000] = 1; backing[100_001] = 2; backing[100_002] = 3;
        Assert.Equal(backing, all);
        // The data file alone is now the RAW disk.
        var raw = File.ReadAllBytes(dir.File("t.data"));
        Assert.Equal(8 << 20, raw.Length);
        Assert.True(raw.AsSpan(0, backing.Length).SequenceEqual(backing));
        re.Dispose();
        FvdImage.Detach(path);
        var detached = HeaderSlots.Current(File.ReadAllBytes(path));
        Assert.False(detached.HasBacking);
        Assert.Equal("", detached.BackingPath);
        using var alone = FvdImage.Open(path);
        var again = new byte[backing.Length];
        alone.Read(0, again);
        Assert.Equal(backing, again);
    }

    [Fact]
    public void DetachRefusesWhileBlocksLiveInTheBacking()
    {
        using var dir = new TempDir();
        MakeBacking(dir, 1 << 20, 9);
        using (CreateOver(dir, 1 << 20)) { }
        var e = Assert.Throws<FvdException>(() => FvdImage.Detach(dir.File("t.fvd")));
        Assert.Equal(FvdErrorKind.InvalidArgument, e.Kind);
    }

    [Fact]
    public void PrefetchRespectsUpperLimit()
    {
        using var dir = new TempDir();
        MakeBacking(dir, 4 << 20, 3);
        using var img = CreateOver(dir, 4 << 20, p: PrefetchSettings.Default with { StartDelaySeconds = 0, MaxReadKiBps = 4096, ChunkBytes = 256 << 10, MinReadKiBps = 0, MinWriteKiBps = 0 });
        var sw = Stopwatch.StartNew();
        img.StartBackgroundWork();
        while (img.Status.Prefetch != PrefetchState.Finished && sw.Elapsed < TimeSpan.FromSeconds(60)) Thread.Sleep(10);
        Assert.Equal(PrefetchState.Finished, img.Status.Prefetch);
        // 4 MiB at 4 MiB/s cannot finish in much under a second (a lower bound: robust on a busy machine).
        Assert.True(sw.Elapsed > TimeSpan.FromSeconds(0.8), $"finished in {sw.Elapsed.TotalSeconds:F2} s despite the limit");
    }

    [Fact]
    public void KilledPrefetchResumesWithoutRereadingPersistedBlocks()
    {
        using var dir = new TempDir();
        var backing = MakeBacking(dir, 2 << 20, 5);
        string path = dir.File("t.fvd");
        FvdImage.Create(path, new FvdCreateOptions { VirtualSize = 2 << 20, BackingFile = "base.raw", BlockSize = 4096 });
        using (var img = FvdImage.Open(path))
        {
            img.PrefetchNow(progress: null, ct: new CancellationTokenSource(TimeSpan.FromMilliseconds(1)).Token);
            // Simulate a half-done prefetch: save the first MiB, persist it, then "crash" (copy files aside).
            var first = new byte[1 << 20];
            img.Read(0, first);
            img.SaveBlocks(0, first);
            img.Flush();
            TempDir.CopyLocked(path, dir.File("c.fvd"));
            TempDir.CopyLocked(dir.File("t.data"), dir.File("c.data"));
        }
        // Rename the crash copy's data file reference: same name pattern, so edit nothing; open the copy.
        File.Move(dir.File("c.fvd"), dir.File("crash.fvd"));
        File.Move(dir.File("c.data"), dir.File("t.data"), overwrite: true);
        File.Delete(path);
        File.Move(dir.File("crash.fvd"), path);
        using var re = FvdImage.Open(path);
        Assert.True(re.WasUnclean);
        long localBefore = re.Status.BlocksLocal;
        Assert.True(localBefore >= 256, $"{localBefore} blocks local after the crash");
        re.PrefetchNow();
        Assert.True(re.Status.BackingBytesRead <= (2 << 20) - (localBefore * 4096), $"re-read {re.Status.BackingBytesRead} bytes");
        var all = new byte[2 << 20];
        re.Read(0, all);
        Assert.Equal(backing, all);
    }

    [Theory]
    [InlineData(-1)]   // prefetch off
    [InlineData(3600)] // prefetch still waiting for its start delay
    public void CopyOnReadAloneFinishesTheImage(int prefetchDelay)
    {
        // Every block becomes local because the guest read it. The image must then finish as after
        // prefetch: flag on disk, backing never consulted again (it may even be gone).
        using var dir = new TempDir();
        var backing = MakeBacking(dir, (1 << 20) + 512, 21); // the last block is partial
        string path = dir.File("t.fvd");
        using (var img = CreateOver(dir, 2 << 20, cor: true))
        {
            img.StartBackgroundWork(prefetch: PrefetchSettings.Default with { StartDelaySeconds = prefetchDelay });
            var buf = new byte[64 << 10];
            for (long off = 0; off < img.Length; off += buf.Length)
            {
                img.Read(off, buf);
                Assert.True(img.WaitForCopyOnRead(TimeSpan.FromSeconds(30)));
            }
            Assert.True(img.Status.Finished, $"{img.Status.BlocksLocal} of {img.Status.BlocksTotal} blocks local, not finished");
            Assert.Equal(PrefetchState.Finished, img.Status.Prefetch);
            Assert.False(img.Status.CopyOnRead);
            long read = img.Status.BackingBytesRead;
            var all = new byte[backing.Length];
            img.Read(0, all);
            Assert.Equal(backing, all);
            Assert.Equal(read, img.Status.BackingBytesRead);
        }
        Assert.True((FvdHeader.Parse(File.ReadAllBytes(path).AsSpan(0, FvdHeader.Size)).Flags & HeaderFlags.PrefetchFinished) != 0);
        File.Delete(dir.File("base.raw"));
        using var re = FvdImage.Open(path);
        var again = new byte[backing.Length];
        re.Read(0, again);
        Assert.Equal(backing, again);
    }

    [Fact]
    public void ImageMadeAllLocalEarlierFinishesWhenBackgroundWorkStarts()
    {
        // Every block written by the guest (or saved by copy-on-read before finishing existed), closed
        // unfinished: the next mount finishes it even with prefetch off.
        using var dir = new TempDir();
        MakeBacking(dir, 256 << 10, 22);
        string path = dir.File("t.fvd");
        using (var img = CreateOver(dir, 256 << 10, cor: false))
            img.Write(0, new byte[256 << 10]);
        using (var img = FvdImage.Open(path))
        {
            Assert.False(img.Status.Finished);
            img.StartBackgroundWork(copyOnRead: false, prefetch: PrefetchSettings.Default with { StartDelaySeconds = -1 });
            Assert.True(img.Status.Finished);
            Assert.Equal(PrefetchState.Finished, img.Status.Prefetch);
        }
        Assert.True((FvdHeader.Parse(File.ReadAllBytes(path).AsSpan(0, FvdHeader.Size)).Flags & HeaderFlags.PrefetchFinished) != 0);
    }
}
