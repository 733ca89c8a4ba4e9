using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Core.Tests;

/// <summary>Copy-on-write specifics (paper 3.2, 3.3): which writes touch bits, merging, zero-aware create.</summary>
public sealed class CopyOnWriteTests : IDisposable
{
    private readonly TempDir _dir = new();
    private string Img => _dir.File("t.fvd");
    private const int Bs = 4096;
    private const int BackingLen = 40_000; // 10 blocks; block 9 covers [36864, 40960), 40000 of it in the backing
    private readonly byte[] _backing = new byte[BackingLen];

    public CopyOnWriteTests()
    {
        new Random(17).NextBytes(_backing);
        File.WriteAllBytes(_dir.File("base.raw"), _backing);
    }

    public void Dispose() => _dir.Dispose();

    private FvdImage Create(long vsize = 1 << 20, bool zeroAware = true, bool inline = false, int bs = Bs)
    {
        FvdImage.Create(Img, new FvdCreateOptions { VirtualSize = vsize, BackingFile = "base.raw", BlockSize = bs, ZeroAware = zeroAware, InlineData = inline, Overwrite = true });
        return FvdImage.Open(Img);
    }

    private static byte[] Read(IBlockDevice d, long off, int len)
    {
        var b = new byte[len];
        d.Read(off, b);
        return b;
    }

    private byte[] Expected(long vsize)
    {
        var e = new byte[vsize];
        Array.Copy(_backing, e, Math.Min(BackingLen, vsize));
        return e;
    }

    private static byte[] Pattern(int len, byte seed)
    {
        var b = new byte[len];
        for (int i = 0; i < len; i++) b[i] = (byte)(seed + i * 7);
        return b;
    }

    [Fact]
    public void MayReadBackingIsTrueOnlyForRequestsThatNeedTheBacking()
    {
        using var img = Create();
        img.Write(0, Pattern(Bs, 1));                                  // block 0 local
        Assert.False(img.MayReadBacking(0, Bs, write: false));
        Assert.True(img.MayReadBacking(0, Bs + 1, write: false));      // reaches block 1
        Assert.True(img.MayReadBacking(2 * Bs, 10, write: false));
        Assert.False(img.MayReadBacking(BackingLen + Bs, 10, write: false)); // past the bits: local
        Assert.False(img.MayReadBacking(2 * Bs, 3 * Bs, write: true)); // whole blocks: no merge
        Assert.True(img.MayReadBacking(2 * Bs + 1, Bs, write: true));  // partial first and last
        Assert.True(img.MayReadBacking(100, Bs, write: true));         // local first, partial last in the backing
        Assert.False(img.MayReadBacking(100, 200, write: true));       // inside the local block
    }

    [Fact]
    public void FreshImageReadsBackingThenZeros()
    {
        using var img = Create();
        Assert.Equal(BackingLen, img.BackingSize);
        Assert.Equal(10, img.Bitmap.Blocks);
        Assert.Equal(0, img.Bitmap.CountSet());
        Assert.Equal(Expected(img.Length), Read(img, 0, (int)img.Length));
    }

    [Fact]
    public void FreeWritesPastTheBackingEndSetNoBits()
    {
        using var img = Create();
        img.Bitmap.TakeDirtyPages();
        var data = Pattern(100_000, 3);
        img.Write(40_960, data);                 // entirely past the last bitmap block
        img.Write(img.Length - 1, new byte[] { 9 });
        img.WriteZeroes(500_000, 10_000);
        img.Discard(600_000, 8192);
        Assert.Equal(0, img.Bitmap.CountSet());
        Assert.Empty(img.Bitmap.TakeDirtyPages());
        Assert.Equal(data, Read(img, 40_960, data.Length));
        Assert.Equal(_backing, Read(img, 0, BackingLen)); // backing part untouched
    }

    [Fact]
    public void WritesToLocalBlocksSetNoNewBits()
    {
        using var img = Create();
        img.Write(2 * Bs, Pattern(Bs, 1));       // whole block 2: direct, bit set
        img.Write(5 * Bs + 10, Pattern(50, 2));  // partial block 5: merged, bit set
        Assert.True(img.Bitmap.Get(2) && img.Bitmap.Get(5));
        Assert.Equal(2, img.Bitmap.CountSet());
        img.Flush();
        Assert.Empty(img.Bitmap.TakeDirtyPages());
        img.Write(2 * Bs + 1, Pattern(10, 3));
        img.Write(5 * Bs, Pattern(Bs, 4));
        img.Write(5 * Bs + 100, Pattern(5, 5));
        img.WriteZeroes(2 * Bs + 100, 100);
        img.Discard(5 * Bs + 1000, 10);
        Assert.Equal(2, img.Bitmap.CountSet());
        Assert.Empty(img.Bitmap.TakeDirtyPages());
        var exp = Expected(img.Length);
        Pattern(Bs, 1).CopyTo(exp, 2 * Bs);
        Pattern(10, 3).CopyTo(exp, 2 * Bs + 1);
        Array.Clear(exp, 2 * Bs + 100, 100);
        Pattern(Bs, 4).CopyTo(exp, 5 * Bs);
        Pattern(5, 5).CopyTo(exp, 5 * Bs + 100);
        Array.Clear(exp, 5 * Bs + 1000, 10);
        Assert.Equal(exp, Read(img, 0, (int)img.Length));
    }

    [Fact]
    public void PartialWriteToBackingBlockMergesBackingContent()
    {
        using var img = Create();
        var p = Pattern(100, 8);
        img.Write(Bs + 50, p);
        Assert.True(img.Bitmap.Get(1));
        Assert.False(img.Bitmap.Get(0) || img.Bitmap.Get(2));
        var exp = _backing[Bs..(2 * Bs)];
        p.CopyTo(exp, 50);
        Assert.Equal(exp, Read(img, Bs, Bs));
        // The whole block is in the data file now: the backing is no longer consulted for it.
        Assert.Equal(exp, Read(img.DataDevice, Bs, Bs));
        // A write spanning two backing blocks partially merges both.
        img.Write(3 * Bs - 7, Pattern(14, 9));
        Assert.True(img.Bitmap.Get(2) && img.Bitmap.Get(3));
        var exp2 = _backing[(2 * Bs)..(4 * Bs)];
        Pattern(14, 9).CopyTo(exp2, Bs - 7);
        Assert.Equal(exp2, Read(img.DataDevice, 2 * Bs, 2 * Bs));
        img.Dispose();
        using var again = FvdImage.Open(Img, new FvdOpenOptions { ReadOnly = true });
        Assert.True(again.Bitmap.Get(1) && again.Bitmap.Get(2) && again.Bitmap.Get(3));
        Assert.Equal(exp, Read(again, Bs, Bs));
        Assert.Equal(exp2, Read(again, 2 * Bs, 2 * Bs));
    }

    [Fact]
    public void PartialZeroingAndDiscardOfBackingBlockMergeToo()
    {
        using var img = Create();
        img.WriteZeroes(Bs + 10, 20);
        img.Discard(3 * Bs + 4000, 200); // straddles blocks 3 and 4 partially
        var exp = Expected(img.Length);
        Array.Clear(exp, Bs + 10, 20);
        Array.Clear(exp, 3 * Bs + 4000, 200);
        Assert.Equal(exp, Read(img, 0, (int)img.Length));
        Assert.True(img.Bitmap.Get(1) && img.Bitmap.Get(3) && img.Bitmap.Get(4));
    }

    [Fact]
    public void DiscardOverBackingBlocksReadsZerosAlsoAfterReopen()
    {
        var img = Create();
        img.Discard(2 * Bs, 3 * Bs);   // whole blocks 2..4
        img.Discard(6 * Bs + 1, 100);  // part of block 6
        var exp = Expected(img.Length);
        Array.Clear(exp, 2 * Bs, 3 * Bs);
        Array.Clear(exp, 6 * Bs + 1, 100);
        Assert.Equal(exp, Read(img, 0, (int)img.Length));
        for (int b = 2; b <= 4; b++) Assert.True(img.Bitmap.Get(b), $"bit {b}");
        // Discarded whole blocks are local zeros (holes), not backing.
        Assert.Contains(img.Map(), m => m.Kind == MapKind.Zero && m.Offset <= 2 * Bs && m.Offset + m.Length >= 5 * Bs);
        img.Dispose();
        using var again = FvdImage.Open(Img);
        Assert.Equal(exp, Read(again, 0, (int)again.Length));
        again.Dispose();
        using var ro = FvdImage.Open(Img, new FvdOpenOptions { ReadOnly = true });
        Assert.Equal(exp, Read(ro, 0, (int)ro.Length));
    }

    [Fact]
    public void ZeroAwareCreateMarksHoleAndZeroBlocksLocal()
    {
        // Backing: block 0 data, block 1 all-zero data, blocks 2..3 a hole, block 4 data, block 5 zero,
        // block 6 partly zero, 7..9 a hole with the tail (40000 bytes total).
        var b = new byte[BackingLen];
        new Random(5).NextBytes(b);
        Array.Clear(b, 1 * Bs, Bs);
        Array.Clear(b, 2 * Bs, 2 * Bs);
        Array.Clear(b, 5 * Bs, Bs);
        Array.Clear(b, 6 * Bs, 100);
        Array.Clear(b, 7 * Bs, BackingLen - 7 * Bs);
        string path = _dir.File("base.raw");
        File.Delete(path);
        using (var f = FileDevice.Create(path, BackingLen))
        {
            f.Write(0, b.AsSpan(0, 2 * Bs));       // block 1 is written zeros (allocated)
            f.Write(4 * Bs, b.AsSpan(4 * Bs, 3 * Bs));
        }
        Array.Copy(b, _backing, BackingLen);
        using var img = Create(vsize: 20 * Bs);
        bool[] local = { false, true, true, true, false, true, false, true, true, true };
        for (int i = 0; i < 10; i++) Assert.True(img.Bitmap.Get(i) == local[i], $"block {i}: bit {img.Bitmap.Get(i)}");
        var map = img.Map().ToList();
        MapKind KindAt(long off) => map.Single(m => m.Offset <= off && off < m.Offset + m.Length).Kind;
        Assert.Equal(MapKind.Backing, KindAt(0));
        Assert.Equal(MapKind.Zero, KindAt(Bs));
        Assert.Equal(MapKind.Zero, KindAt(3 * Bs));
        Assert.Equal(MapKind.Backing, KindAt(4 * Bs));
        Assert.Equal(MapKind.Zero, KindAt(5 * Bs));
        Assert.Equal(MapKind.Backing, KindAt(6 * Bs));
        Assert.Equal(MapKind.Zero, KindAt(9 * Bs));
        Assert.Equal(MapKind.Zero, KindAt(15 * Bs));
        Assert.Equal(img.Length, map.Sum(m => m.Length));
        Assert.Equal(Expected(img.Length), Read(img, 0, (int)img.Length));
        // Writing a zero-aware local block needs no bitmap update.
        img.Bitmap.TakeDirtyPages();
        img.Write(Bs + 5, Pattern(10, 1));
        Assert.Empty(img.Bitmap.TakeDirtyPages());
    }

    [Fact]
    public void WithoutZeroAwareHolesMapAsBackingZero()
    {
        string path = _dir.File("base.raw");
        File.Delete(path);
        using (var f = FileDevice.Create(path, BackingLen)) f.Write(0, _backing.AsSpan(0, Bs));
        Array.Clear(_backing, Bs, BackingLen - Bs);
        using var img = Create(zeroAware: false);
        Assert.Equal(0, img.Bitmap.CountSet());
        var map = img.Map().ToList();
        Assert.Equal(MapKind.Backing, map[0].Kind);
        Assert.Equal(Bs, map[0].Length);
        Assert.Equal(MapKind.BackingZero, map[1].Kind);
        Assert.Equal(Expected(img.Length), Read(img, 0, (int)img.Length));
    }

    [Fact]
    public void MinSizeTemplateVirtualLargerThanBacking()
    {
        using var img = Create(vsize: 10L << 20);
        Assert.Equal(10L << 20, img.Length);
        Assert.Equal(BackingLen, img.BackingSize);
        var map = img.Map().ToList();
        Assert.Equal(img.Length, map.Sum(m => m.Length));
        Assert.Contains(map, m => m.Kind == MapKind.Zero && m.Offset + m.Length == img.Length);
        Assert.True(DeviceChecks.IsZero(Read(img, 40_960, 1 << 20)));
        img.Write((10L << 20) - 4096, Pattern(4096, 1));
        Assert.Equal(Pattern(4096, 1), Read(img, (10L << 20) - 4096, 4096));
        Assert.Equal(_backing, Read(img, 0, BackingLen));
    }

    [Fact]
    public void VirtualSmallerThanBackingCoversOnlyTheVirtualPart()
    {
        using var img = Create(vsize: 8192 + 512);
        Assert.Equal(8192 + 512, img.BackingSize);
        Assert.Equal(3, img.Bitmap.Blocks);
        Assert.Equal(_backing[..(8192 + 512)], Read(img, 0, 8192 + 512));
        img.Write(8192 + 100, Pattern(10, 2)); // partial write to the short last block
        var exp = _backing[8192..(8192 + 512)];
        Pattern(10, 2).CopyTo(exp, 100);
        Assert.Equal(exp, Read(img, 8192, 512));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BackingNotAMultipleOfTheBlockSize(bool inline)
    {
        using var img = Create(inline: inline);
        // Block 9 = [36864, 40960): 3136 backing bytes, then 960 bytes past the backing's end.
        var exp = new byte[Bs];
        Array.Copy(_backing, 9 * Bs, exp, 0, BackingLen - 9 * Bs);
        Assert.Equal(exp, Read(img, 9 * Bs, Bs));
        // A partial write straddling the backing's end merges backing bytes and zeros.
        img.Write(39_990, Pattern(20, 4));
        Assert.True(img.Bitmap.Get(9));
        Pattern(20, 4).CopyTo(exp, 39_990 - 9 * Bs);
        Assert.Equal(exp, Read(img, 9 * Bs, Bs));
        // A write only in the tail past the backing's end but inside block 9 (now local): no new bits.
        img.Write(40_500, Pattern(10, 5));
        Pattern(10, 5).CopyTo(exp, 40_500 - 9 * Bs);
        Assert.Equal(exp, Read(img, 9 * Bs, Bs));
        img.Dispose();
        using var again = FvdImage.Open(Img, new FvdOpenOptions { ReadOnly = true });
        Assert.Equal(exp, Read(again, 9 * Bs, Bs));
        Assert.Equal(_backing[..(9 * Bs)], Read(again, 0, 9 * Bs));
    }

    [Fact]
    public void WriteOnlyInTailOfLastBlockPastBackingEndMergesBacking()
    {
        using var img = Create();
        // Block 9 still in the backing; the write touches only bytes past the backing's end.
        img.Write(40_100, Pattern(100, 6));
        var exp = new byte[Bs];
        Array.Copy(_backing, 9 * Bs, exp, 0, BackingLen - 9 * Bs);
        Pattern(100, 6).CopyTo(exp, 40_100 - 9 * Bs);
        Assert.Equal(exp, Read(img, 9 * Bs, Bs));
    }

    [Fact]
    public void WriteSpanningBackingAndBeyondEnd()
    {
        using var img = Create();
        var p = Pattern(20_000, 7);
        img.Write(30_000, p); // partial block 7, whole 8 and 9, then past the bitmap
        var exp = Expected(img.Length);
        p.CopyTo(exp, 30_000);
        Assert.Equal(exp, Read(img, 0, (int)img.Length));
        Assert.True(img.Bitmap.Get(7) && img.Bitmap.Get(8) && img.Bitmap.Get(9));
        Assert.Equal(3, img.Bitmap.CountSet());
    }

    [Fact]
    public void SmallBlocksManyBits()
    {
        using var img = Create(bs: 512);
        Assert.Equal(79, img.Bitmap.Blocks);
        img.Write(1000, Pattern(3000, 1)); // partial 1, whole 2..6, partial 7
        for (int b = 1; b <= 7; b++) Assert.True(img.Bitmap.Get(b));
        Assert.False(img.Bitmap.Get(0) || img.Bitmap.Get(8));
        var exp = Expected(img.Length);
        Pattern(3000, 1).CopyTo(exp, 1000);
        Assert.Equal(exp, Read(img, 0, (int)img.Length));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void LocalRangesOfTheDataFileAreTheVirtualDiskBytes(int seed)
    {
        // docs/architecture.md §2: byte d of the data file is virtual byte d wherever the block is local, so a
        // fully local image is a raw file.
        var rng = new Random(seed);
        int bs = 512 << rng.Next(4);
        using var img = Create(vsize: 128 * 1024, bs: bs);
        for (int i = 0; i < 80; i++)
        {
            long off = rng.Next((int)img.Length);
            int len = (int)Math.Min(img.Length - off, rng.Next(1, 3 * bs));
            switch (rng.Next(4))
            {
                case 0: img.Discard(off, len); break;
                case 1: img.WriteZeroes(off, len); break;
                default: var d = new byte[len]; rng.NextBytes(d); img.Write(off, d); break;
            }
        }
        var virt = Read(img, 0, (int)img.Length);
        var data = Read(img.DataDevice, 0, (int)img.Length);
        foreach (var m in img.Map().Where(m => m.Kind is MapKind.Data or MapKind.Zero))
            Assert.True(virt.AsSpan((int)m.Offset, (int)m.Length).SequenceEqual(data.AsSpan((int)m.Offset, (int)m.Length)),
                $"seed {seed}: local range [{m.Offset},+{m.Length}) differs between the disk and the data file");
        // Make everything local: the data file is then byte-identical to the disk.
        for (long b = 0; b < img.Bitmap.Blocks; b++)
            if (!img.Bitmap.Get(b)) img.Write(b * bs, Read(img, b * bs, (int)Math.Min(bs, img.Length - b * bs)));
        Assert.True(img.Bitmap.AllSet);
        Assert.Equal(virt, Read(img.DataDevice, 0, (int)img.Length));
        img.Flush();
        Assert.Equal(virt, File.ReadAllBytes(_dir.File("t.data")));
    }
}
