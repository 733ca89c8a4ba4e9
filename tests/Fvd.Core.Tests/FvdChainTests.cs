using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Core.Tests;

/// <summary>FVD images as backing images of FVD images (backing_format "fvd"): chains, loops, maps, copy-on-read.</summary>
public class FvdChainTests
{
    private const int Mi = 1 << 20;

    /// <summary>A raw template: random data in its first MiB and third MiB, a hole in between and after.</summary>
    private static byte[] MakeRaw(TempDir dir, string name, long size, int seed)
    {
        var content = new byte[size];
        var rnd = new Random(seed);
        rnd.NextBytes(content.AsSpan(0, Mi));
        rnd.NextBytes(content.AsSpan(2 * Mi, Mi));
        using var fs = new FileStream(dir.File(name), FileMode.Create);
        fs.SetLength(size);
        fs.Write(content, 0, Mi);
        fs.Position = 2 * Mi;
        fs.Write(content, 2 * Mi, Mi);
        return content;
    }

    private static void CreateOver(TempDir dir, string name, string backing, string format, long size = 0, bool cor = false) =>
        FvdImage.Create(dir.File(name), new FvdCreateOptions
        {
            VirtualSize = size > 0 ? size : FvdImage.BackingLength(dir.File(name), backing, format),
            BackingFile = backing,
            BackingFormat = format,
            CopyOnRead = cor,
        });

    private static void WriteAt(TempDir dir, string name, long offset, byte[] model, int length, byte value)
    {
        using var img = FvdImage.Open(dir.File(name));
        var data = Enumerable.Repeat(value, length).ToArray();
        img.Write(offset, data);
        data.CopyTo(model, offset);
    }

    [Fact]
    public void ChainOfFvdImagesReadsEveryLayersWrites()
    {
        using var dir = new TempDir();
        var model = MakeRaw(dir, "base.raw", 4 * Mi, 1);
        CreateOver(dir, "a.fvd", "base.raw", "raw");
        WriteAt(dir, "a.fvd", 100, model, 5000, 0xA1);
        CreateOver(dir, "b.fvd", "a.fvd", "fvd");
        WriteAt(dir, "b.fvd", 2 * Mi + 4000, model, 9000, 0xB2);
        CreateOver(dir, "c.fvd", "b.fvd", "fvd", size: 6 * Mi);
        Array.Resize(ref model, 6 * Mi);
        WriteAt(dir, "c.fvd", 5 * Mi - 10, model, 20, 0xC3); // past the chain's end: a free write
        WriteAt(dir, "c.fvd", 3 * Mi + 1, model, 1, 0xC4);   // into a block that is a hole everywhere below

        using var c = FvdImage.Open(dir.File("c.fvd"), new FvdOpenOptions { ReadOnly = true });
        var got = new byte[c.Length];
        c.Read(0, got);
        Assert.Equal(model, got);
    }

    [Fact]
    public void MapAndZeroAwareCreationSeeHolesThroughTheChain()
    {
        using var dir = new TempDir();
        MakeRaw(dir, "base.raw", 4 * Mi, 2);
        CreateOver(dir, "a.fvd", "base.raw", "raw");
        CreateOver(dir, "b.fvd", "a.fvd", "fvd");
        using var b = FvdImage.Open(dir.File("b.fvd"), new FvdOpenOptions { ReadOnly = true });
        // b's zero-aware creation marked the chain's holes local: only the two data MiB still come from below.
        Assert.Equal(2 * Mi / b.BlockSize, b.Bitmap.Blocks - b.Bitmap.CountSet());
        var kinds = b.Map().Select(m => (m.Offset, m.Length, m.Kind)).ToList();
        Assert.Equal([(0L, (long)Mi, MapKind.Backing), (Mi, Mi, MapKind.Zero), (2 * Mi, Mi, MapKind.Backing), (3 * Mi, Mi, MapKind.Zero)], kinds);
        Assert.Equal(new Extent(ExtentKind.Zero, Mi, Mi), b.GetExtent(Mi, 4 * Mi));
    }

    [Fact]
    public void LoopInTheChainIsRefusedAlsoThroughASymlink()
    {
        using var dir = new TempDir();
        MakeRaw(dir, "base.raw", 4 * Mi, 3);
        CreateOver(dir, "a.fvd", "base.raw", "raw");
        File.CreateSymbolicLink(dir.File("link.fvd"), dir.File("a.fvd"));
        CreateOver(dir, "b.fvd", "link.fvd", "fvd");
        // Replace a.fvd by an image over b.fvd: a -> b -> link (= a) -> ...
        FvdImage.Create(dir.File("a2.fvd"), new FvdCreateOptions { VirtualSize = 4 * Mi, BackingFile = "b.fvd", BackingFormat = "fvd" });
        File.Move(dir.File("a2.fvd"), dir.File("a.fvd"), overwrite: true);

        var e = Assert.Throws<FvdException>(() => FvdImage.Open(dir.File("b.fvd")));
        Assert.Contains("loops back", e.Message);
        e = Assert.Throws<FvdException>(() => FvdImage.Open(dir.File("a.fvd"), new FvdOpenOptions { ReadOnly = true }));
        Assert.Contains("loops back", e.Message);
    }

    [Fact]
    public void FvdBackingIsSharedLockedSoNoWriterCanOpenIt()
    {
        using var dir = new TempDir();
        MakeRaw(dir, "base.raw", 4 * Mi, 4);
        CreateOver(dir, "a.fvd", "base.raw", "raw");
        CreateOver(dir, "b.fvd", "a.fvd", "fvd");
        using var b = FvdImage.Open(dir.File("b.fvd"));
        var e = Assert.Throws<FvdException>(() => FvdImage.Open(dir.File("a.fvd"), new FvdOpenOptions { LockWait = LockWait.None }));
        Assert.Equal(FvdErrorKind.Busy, e.Kind);
        using var reader = FvdImage.Open(dir.File("a.fvd"), new FvdOpenOptions { ReadOnly = true });
    }

    [Theory]
    [InlineData("raw")]
    [InlineData("fvd")]
    [InlineData("qcow2")]
    [InlineData("fvd-over-qcow2")]
    public void CopyOnReadAndPrefetchWorkOverEveryBackingFormat(string format)
    {
        using var dir = new TempDir();
        var model = MakeRaw(dir, "base.raw", 4 * Mi, 5);
        string backing = "base.raw";
        if (format == "fvd")
        {
            CreateOver(dir, "mid.fvd", "base.raw", "raw");
            backing = "mid.fvd";
        }
        else if (format != "raw")
        {
            Qemu.Require();
            Qemu.Run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", dir.File("base.raw"), dir.File("base.qcow2"));
            backing = "base.qcow2";
        }
        if (format == "fvd-over-qcow2")
        {
            CreateOver(dir, "mid.fvd", "base.qcow2", "qcow2");
            (backing, format) = ("mid.fvd", "fvd");
        }
        CreateOver(dir, "cor.fvd", backing, format, cor: true);
        using (var img = FvdImage.Open(dir.File("cor.fvd")))
        {
            img.StartBackgroundWork();
            Assert.True(img.CopyOnReadEnabled);
            var got = new byte[img.Length];
            img.Read(0, got);
            Assert.True(img.WaitForCopyOnRead(TimeSpan.FromSeconds(30)));
            Assert.Equal(model, got);
            Assert.Equal(img.Bitmap.Blocks, img.Status.BlocksLocal);
        }
        CreateOver(dir, "pf.fvd", backing, format);
        using (var img = FvdImage.Open(dir.File("pf.fvd")))
        {
            img.PrefetchNow();
            Assert.True(img.Bitmap.AllSet);
            var got = new byte[img.Length];
            img.Read(0, got);
            Assert.Equal(model, got);
        }
    }
}
