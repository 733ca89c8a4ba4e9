using System.Buffers.Binary;
using Fvd.Core.Format;
using Fvd.Core.Image;
using Fvd.Core.Io;
using Xunit.Abstractions;

namespace Fvd.Core.Tests;

/// <summary>
/// Durability order (docs/architecture.md §3: a bit reaches the metadata file only after its block's data is
/// durable) and crash images made by copying the files aside without closing the image.
/// </summary>
public sealed class DurabilityTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = new();
    private string Img => _dir.File("t.fvd");
    private string DataPath => _dir.File("t.data");
    private const int BackingLen = 40_000;
    private readonly byte[] _backing = MakeBacking();

    private static byte[] MakeBacking()
    {
        var b = new byte[BackingLen];
        new Random(23).NextBytes(b);
        Array.Clear(b, 8192, 4096); // zero-aware create makes these blocks local
        return b;
    }

    public void Dispose() => _dir.Dispose();

    private void Create(int bs = 512, bool inline = false, long vsize = 65536)
    {
        File.WriteAllBytes(_dir.File("base.raw"), _backing);
        FvdImage.Create(Img, new FvdCreateOptions { VirtualSize = vsize, BackingFile = "base.raw", BlockSize = bs, InlineData = inline, Overwrite = true });
    }

    /// <summary>
    /// Reads a file while the image holds it open and flock'ed. .NET's own open takes a shared flock and
    /// fails, so this opens with libc open(2) directly.
    /// </summary>
    internal static byte[] ReadShared(string path)
    {
        int fd = Libc.open(path, 0 /* O_RDONLY */, 0);
        Assert.True(fd >= 0, $"open {path} failed");
        using var h = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
        var b = new byte[RandomAccess.GetLength(h)];
        int n = 0;
        while (n < b.Length)
        {
            int r = RandomAccess.Read(h, b.AsSpan(n), n);
            if (r == 0) break;
            n += r;
        }
        return b;
    }

    /// <summary>The bitmap as it is in the metadata file now (page cache), as a bool per block.</summary>
    private static bool[] DiskBits(string meta, long blocks)
    {
        var m = ReadShared(meta);
        var h = HeaderSlots.Current(m);
        var bits = new bool[blocks];
        for (long b = 0; b < blocks; b++) bits[b] = (m[h.BitmapOffset + b / 8] & (1 << (int)(b % 8))) != 0;
        return bits;
    }

    /// <summary>"Crash": copies the image's files aside while it is open, as a power cut after the last flush would leave them (at best).</summary>
    private (string Meta, string Data) CopyAside(FvdImage img, string tag)
    {
        string dir = _dir.File("crash-" + tag);
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, "base.raw"), _backing);
        string meta = Path.Combine(dir, "t.fvd");
        File.WriteAllBytes(meta, ReadShared(img.Path));
        string data = Path.Combine(dir, "t.data");
        if (!img.Header.InlineData) File.WriteAllBytes(data, ReadShared(img.DataPath));
        return (meta, data);
    }

    private static byte[] Read(IBlockDevice d, long off, int len)
    {
        var b = new byte[len];
        d.Read(off, b);
        return b;
    }

    [Theory]
    [InlineData(512, false, 1)]
    [InlineData(4096, false, 2)]
    [InlineData(512, true, 3)]
    public void BitsReachTheMetadataFileOnlyAfterTheirDataIsFlushed(int bs, bool inline, int seed)
    {
        output.WriteLine($"seed {seed}");
        Create(bs, inline);
        using var img = FvdImage.Open(Img);
        long blocks = img.Bitmap.Blocks;
        var baseline = DiskBits(Img, blocks);
        var pending = new bool[blocks];
        var durable = new bool[blocks];
        int violations = 0, checks = 0, dataFlushes = 0;
        string? first = null;
        var previous = baseline;
        void Check(string when)
        {
            checks++;
            var disk = DiskBits(Img, blocks);
            for (long b = 0; b < blocks; b++)
                if (previous[b] && !disk[b])
                {
                    violations++;
                    first ??= $"{when}: bit {b} went 1 -> 0 in the metadata file";
                }
            previous = disk;
            for (long b = 0; b < blocks; b++)
                if (disk[b] && !baseline[b] && !durable[b])
                {
                    violations++;
                    first ??= $"{when}: bit {b} is in the metadata file but its data was not flushed";
                }
        }
        img.WrapDataDeviceForTests(inner =>
        {
            var rec = new RecordingDevice(inner);
            rec.Before = op =>
            {
                Check($"before data {op.Op} [{op.Offset},+{op.Length})");
                if (op.Op == RecordedOp.Flush) dataFlushes++;
            };
            rec.After = op =>
            {
                if (op.Op == RecordedOp.Flush)
                {
                    for (long b = 0; b < blocks; b++) durable[b] |= pending[b];
                    Array.Clear(pending);
                }
                else if (op.Op != RecordedOp.Read && op.Length > 0)
                {
                    long first = op.Offset / bs, last = Math.Min(blocks - 1, (op.Offset + op.Length - 1) / bs);
                    for (long b = first; b <= last; b++) pending[b] = true;
                }
            };
            return rec;
        });

        var rng = new Random(seed);
        for (int step = 0; step < 200; step++)
        {
            long off = rng.NextInt64(img.Length);
            int len = (int)Math.Min(img.Length - off, rng.Next(1, 3 * bs));
            switch (rng.Next(8))
            {
                case < 5:
                    var d = new byte[len];
                    rng.NextBytes(d);
                    img.Write(off, d);
                    break;
                case 5: img.Discard(off, len); break;
                case 6: img.WriteZeroes(off, len); break;
                default:
                    img.Flush();
                    Check("after image flush");
                    // After Flush every bit set in memory is in the file.
                    var disk = DiskBits(Img, blocks);
                    for (long b = 0; b < blocks; b++) Assert.True(disk[b] == img.Bitmap.Get(b), $"step {step}: bit {b} memory {img.Bitmap.Get(b)} disk {disk[b]}");
                    break;
            }
        }
        img.Flush();
        Check("final flush");
        output.WriteLine($"{checks} checks, {dataFlushes} data flushes, {img.Bitmap.CountSet()} bits set");
        Assert.True(violations == 0, first);
        Assert.True(dataFlushes > 5);
    }

    [Fact]
    public void ImageFlushFlushesDataBeforeWritingBitmap()
    {
        // The same invariant, spelled out on one write: at the data flush the bit is not yet in the file;
        // after image Flush it is.
        Create();
        using var img = FvdImage.Open(Img);
        RecordingDevice? rec = null;
        bool? bitOnDiskAtDataFlush = null;
        img.WrapDataDeviceForTests(inner => rec = new RecordingDevice(inner)
        {
            Before = op => { if (op.Op == RecordedOp.Flush) bitOnDiskAtDataFlush = DiskBits(Img, 79)[3]; },
        });
        img.Write(3 * 512 + 1, new byte[] { 1, 2, 3 });
        Assert.True(img.Bitmap.Get(3));
        Assert.False(DiskBits(Img, 79)[3]); // not before Flush
        var ops = rec!.Operations;
        Assert.Single(ops);
        Assert.Equal(new RecordedOperation(ops[0].Sequence, RecordedOp.Write, 3 * 512, 512), ops[0]); // one whole merged block
        img.Flush();
        Assert.False(bitOnDiskAtDataFlush);
        Assert.True(DiskBits(Img, 79)[3]);
        Assert.Equal(RecordedOp.Flush, rec.Operations[^1].Op);
    }

    [Fact]
    public void WritesOnlyToLocalBlocksDoNotWriteTheBitmap()
    {
        Create();
        using var img = FvdImage.Open(Img);
        img.Write(0, new byte[512]);
        img.Flush();
        var before = ReadShared(Img)[..12288];
        img.Write(100, new byte[] { 7 });        // local block
        img.Write(50_000, new byte[] { 7 });     // past the backing
        img.Flush();
        Assert.Equal(before, ReadShared(Img)[..12288]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AfterWriteAndFlushACrashCopyHasTheDataAndTheBits(bool inline)
    {
        Create(512, inline);
        using var img = FvdImage.Open(Img);
        var exp = new byte[img.Length];
        Array.Copy(_backing, exp, BackingLen);
        var rng = new Random(4);
        void W(long off, int len)
        {
            var d = new byte[len];
            rng.NextBytes(d);
            img.Write(off, d);
            d.CopyTo(exp, off);
        }
        W(700, 100);       // partial block 1 (merge)
        W(2048, 1024);     // whole blocks 4, 5
        W(39_900, 300);    // last block, straddling the backing's end
        W(50_000, 5000);   // past the backing
        img.Discard(20_480, 1024); // whole blocks 40, 41
        Array.Clear(exp, 20_480, 1024);
        img.Flush();
        var (meta, _) = CopyAside(img, "flushed");
        using var copy = FvdImage.Open(meta);
        Assert.True(copy.WasUnclean);
        Assert.Equal(exp, Read(copy, 0, (int)copy.Length));
        foreach (int b in new[] { 1, 4, 5, 40, 41, 78 }) Assert.True(copy.Bitmap.Get(b), $"bit {b}");
        Assert.False(copy.Bitmap.Get(0) || copy.Bitmap.Get(2) || copy.Bitmap.Get(6));
    }

    [Theory]
    [InlineData(512, 1)]
    [InlineData(4096, 2)]
    [InlineData(512, 3)]
    public void AfterWriteWithoutFlushACrashCopyReadsOldOrNewNeverGarbage(int bs, int seed)
    {
        output.WriteLine($"seed {seed}");
        Create(bs);
        using var img = FvdImage.Open(Img);
        var rng = new Random(seed);
        var old = new byte[img.Length];
        Array.Copy(_backing, old, BackingLen);
        // Some blocks local and flushed first, so both local and backing blocks are overwritten below.
        var pre = new byte[3 * bs];
        rng.NextBytes(pre);
        img.Write(bs, pre);
        pre.CopyTo(old, bs);
        img.Flush();
        var neu = (byte[])old.Clone();
        for (int i = 0; i < 20; i++)
        {
            long off = rng.NextInt64(img.Length);
            int len = (int)Math.Min(img.Length - off, rng.Next(1, 2 * bs));
            var d = new byte[len];
            rng.NextBytes(d);
            img.Write(off, d);
            d.CopyTo(neu, off);
        }
        var (meta, _) = CopyAside(img, "unflushed");
        using var copy = FvdImage.Open(meta, new FvdOpenOptions { ReadOnly = true });
        var got = Read(copy, 0, (int)copy.Length);
        for (int s = 0; s < got.Length; s += 512)
        {
            var g = got.AsSpan(s, 512);
            Assert.True(g.SequenceEqual(old.AsSpan(s, 512)) || g.SequenceEqual(neu.AsSpan(s, 512)),
                $"seed {seed}: sector at {s} is neither the old nor the new content");
        }
        // Bits were not flushed, so every block still in the backing at the last flush reads old backing content.
        for (long b = 0; b < copy.Bitmap.Blocks; b++)
            if (!copy.Bitmap.Get(b))
            {
                long start = b * bs;
                int len = (int)Math.Min(bs, copy.Length - start);
                Assert.True(got.AsSpan((int)start, len).SequenceEqual(old.AsSpan((int)start, len)), $"block {b} in the backing must read old");
            }
    }

    [Fact]
    public void OpenForWritingClearsTheCleanFlagOnDiskAndDisposeSetsIt()
    {
        Create();
        static HeaderFlags FlagsOnDisk(string p) => HeaderSlots.Current(ReadShared(p)).Flags;
        Assert.True((FlagsOnDisk(Img) & HeaderFlags.CleanShutdown) != 0);
        using (var ro = FvdImage.Open(Img, new FvdOpenOptions { ReadOnly = true }))
        {
            Assert.False(ro.WasUnclean);
            Assert.True((FlagsOnDisk(Img) & HeaderFlags.CleanShutdown) != 0); // read-only open leaves it
        }
        var img = FvdImage.Open(Img);
        Assert.False(img.WasUnclean);
        Assert.True((FlagsOnDisk(Img) & HeaderFlags.CleanShutdown) == 0);
        var d = new byte[3000];
        new Random(1).NextBytes(d);
        img.Write(1000, d);
        img.Flush();
        var (meta, _) = CopyAside(img, "unclean");
        Assert.True((FlagsOnDisk(meta) & HeaderFlags.CleanShutdown) == 0);
        using (var copy = FvdImage.Open(meta))
        {
            Assert.True(copy.WasUnclean);
            Assert.Equal(d, Read(copy, 1000, 3000));
            Assert.True(copy.Bitmap.Get(1) && copy.Bitmap.Get(7));
        }
        using (var again = FvdImage.Open(meta)) Assert.False(again.WasUnclean); // the copy was closed cleanly
        img.Dispose();
        Assert.True((FlagsOnDisk(Img) & HeaderFlags.CleanShutdown) != 0);
        using var reopened = FvdImage.Open(Img);
        Assert.False(reopened.WasUnclean);
        Assert.Equal(d, Read(reopened, 1000, 3000));
        // Both header copies' CRCs stay valid through the flag changes.
        for (int slot = 0; slot < HeaderSlots.Count; slot++)
        {
            var h = ReadShared(Img).AsSpan((int)HeaderSlots.Offset(slot), FvdHeader.Size).ToArray();
            uint stored = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(16));
            BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(16), 0);
            Assert.Equal(GoldenTests.ReferenceCrc32C(h), stored);
        }
    }

    [Fact]
    public void SecondWriterIsRefusedWhileOpen()
    {
        Create();
        using var img = FvdImage.Open(Img);
        var e = Assert.Throws<FvdException>(() => FvdImage.Open(Img));
        Assert.True(e.Kind == FvdErrorKind.Busy, $"{e.Kind}: {e.Message} (inner HResult {e.InnerException?.HResult})");
        Assert.Equal(FvdErrorKind.Busy, Assert.Throws<FvdException>(() => FvdImage.Open(Img, new FvdOpenOptions { ReadOnly = true })).Kind);
        using var tool = FvdImage.Open(Img, new FvdOpenOptions { ReadOnly = true, NoLock = true });
    }

    [Fact]
    public void MultiPageBitmapFlushesOnlyDirtyPagesAndPersists()
    {
        // 3 bitmap pages: 512-byte blocks over a 40 MiB sparse backing (ZeroAware off so every bit starts 0).
        long backingLen = 40L << 20;
        using (var f = FileDevice.Create(_dir.File("big.raw"), backingLen)) f.Write(backingLen - 1, new byte[] { 1 });
        string img = _dir.File("big.fvd");
        FvdImage.Create(img, new FvdCreateOptions { VirtualSize = backingLen, BackingFile = "big.raw", BlockSize = 512, ZeroAware = false });
        long pageBlocks = 4096 * 8;
        var image = FvdImage.Open(img);
        Assert.Equal(3, image.Bitmap.PageCount);
        image.Write(5 * 512 + 1, new byte[] { 1 });                    // page 0
        image.Write((2 * pageBlocks + 7) * 512, new byte[512]);       // page 2, whole block
        image.Write(backingLen - 10, new byte[] { 1, 2, 3 });         // last block, last page
        const int Bm = 8192; // bitmap offset
        var pageBefore1 = ReadShared(img).AsSpan(Bm + 4096, 4096).ToArray();
        image.Flush();
        var meta = ReadShared(img);
        Assert.Equal(pageBefore1, meta.AsSpan(Bm + 4096, 4096).ToArray()); // page 1 untouched
        Assert.Equal(0x20, meta[Bm + 0]);                                   // block 5
        Assert.Equal(0x80, meta[Bm + (int)((2 * pageBlocks + 7) / 8)]);     // block 2*32768+7
        long last = backingLen / 512 - 1;
        Assert.NotEqual(0, meta[Bm + (int)(last / 8)] & (1 << (int)(last % 8)));
        image.Dispose();
        using var again = FvdImage.Open(img, new FvdOpenOptions { ReadOnly = true });
        Assert.Equal(3, again.Bitmap.CountSet());
        Assert.True(again.Bitmap.Get(5) && again.Bitmap.Get(2 * pageBlocks + 7) && again.Bitmap.Get(last));
        var tail = new byte[10];
        again.Read(backingLen - 10, tail);
        Assert.Equal(new byte[] { 1, 2, 3, 0, 0, 0, 0, 0, 0, 1 }, tail);
    }

    [Fact]
    public void OverwriteCreateOfAnOpenImageIsRefusedAndHarmless()
    {
        Create();
        using var img = FvdImage.Open(Img);
        var d = new byte[4096];
        new Random(8).NextBytes(d);
        img.Write(0, d);
        img.Flush();
        var metaBefore = ReadShared(Img);
        var e = Assert.Throws<FvdException>(() => FvdImage.Create(Img, new FvdCreateOptions { VirtualSize = 4096, Overwrite = true }));
        Assert.True(e.Kind == FvdErrorKind.Busy, $"{e.Kind}: {e.Message}");
        Assert.Equal(metaBefore, ReadShared(Img));
        Assert.Equal(d, Read(img, 0, 4096));
        Assert.Equal(d, ReadShared(DataPath)[..4096]);
    }
}
