using System.Diagnostics;
using Fvd.Core.Format;
using Fvd.Core.Image;

namespace Fvd.Core.Tests;

/// <summary>Backing templates over HTTP range requests, against a real nginx on 127.0.0.1.</summary>
public class HttpBackingTests
{
    [Fact]
    public void ImageOverHttpTemplateReadsCopiesOnReadAndPrefetches()
    {
        using var web = new NginxServer();
        using var dir = new TempDir();
        var template = new byte[(2 << 20) + 4096];
        new Random(11).NextBytes(template);
        File.WriteAllBytes(System.IO.Path.Combine(web.Root, "tpl.raw"), template);
        string img = dir.File("vm.fvd");
        FvdImage.Create(img, new FvdCreateOptions { VirtualSize = 8 << 20, BackingFile = web.Url("tpl.raw") });
        var hdr = HeaderSlots.Current(File.ReadAllBytes(img));
        Assert.True((hdr.Flags & HeaderFlags.CopyOnRead) != 0, "copy-on-read is the default for remote templates");
        using (var fvd = FvdImage.Open(img))
        {
            fvd.StartBackgroundWork();
            var buf = new byte[template.Length];
            fvd.Read(0, buf);
            Assert.Equal(template, buf);
            Assert.True(fvd.WaitForCopyOnRead(TimeSpan.FromSeconds(20)));
            long read = fvd.Status.BackingBytesRead;
            fvd.Read(0, buf);
            Assert.Equal(read, fvd.Status.BackingBytesRead);
            fvd.PrefetchNow();
            Assert.True(fvd.Status.Finished);
        }
        web.Stop(); // the template is no longer needed once prefetch finished
        using var again = FvdImage.Open(img);
        var all = new byte[template.Length];
        again.Read(0, all);
        Assert.Equal(template, all);
    }

    [Fact]
    public void WriteFromALocalBlockIntoOneTheServerCannotServeWritesNothing()
    {
        // Block 0 local, block 1 in the template; the write covers the end of 0 and the start of 1. The backing
        // read for block 1 comes before any data write, so when it fails block 0 is left as it was.
        using var web = new NginxServer();
        using var dir = new TempDir();
        var template = new byte[1 << 20];
        new Random(13).NextBytes(template);
        File.WriteAllBytes(System.IO.Path.Combine(web.Root, "tpl.raw"), template);
        string img = dir.File("vm.fvd");
        FvdImage.Create(img, new FvdCreateOptions { VirtualSize = 1 << 20, BackingFile = web.Url("tpl.raw"), CopyOnRead = false });
        using var fvd = FvdImage.Open(img);
        int bs = fvd.BlockSize;
        var local = new byte[bs];
        new Random(14).NextBytes(local);
        fvd.Write(0, local);
        web.Stop();
        var e = Assert.Throws<FvdException>(() => fvd.Write(bs - 100, new byte[200]));
        Assert.Equal(FvdErrorKind.Io, e.Kind);
        var back = new byte[bs];
        fvd.Read(0, back);
        Assert.Equal(local, back);
        Assert.False(fvd.Bitmap.Get(1));
    }

    [Fact]
    public void ServerGoneGivesIoErrorAndCorruptsNothing()
    {
        using var web = new NginxServer();
        using var dir = new TempDir();
        var template = new byte[1 << 20];
        new Random(12).NextBytes(template);
        File.WriteAllBytes(System.IO.Path.Combine(web.Root, "tpl.raw"), template);
        string img = dir.File("vm.fvd");
        FvdImage.Create(img, new FvdCreateOptions { VirtualSize = 1 << 20, BackingFile = web.Url("tpl.raw"), CopyOnRead = false });
        using var fvd = FvdImage.Open(img);
        fvd.Write(0, new byte[] { 9, 9, 9 }); // a partial write merges backing content
        web.Stop();
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<FvdException>(() => fvd.Read(65536, new byte[4096]));
        Assert.Equal(FvdErrorKind.Io, e.Kind);
        Assert.Throws<FvdException>(() => fvd.Write(200_000, new byte[] { 1 })); // needs the backing to merge
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30));
        var head = new byte[8];
        fvd.Read(0, head); // local data still readable
        Assert.Equal(new byte[] { 9, 9, 9 }, head[..3]);
        Assert.Equal(template.AsSpan(3, 5).ToArray(), head[3..]);
        web.Start();
        var b = new byte[4096];
        fvd.Read(65536, b);
        Assert.Equal(template.AsSpan(65536, 4096).ToArray(), b);
        var w = new byte[4096];
        fvd.Read(196608, w);
        Assert.Equal(template.AsSpan(196608, 4096).ToArray(), w); // the failed write left the block as it was
    }

    [Fact]
    public void MissingUrlIsNotFound()
    {
        using var web = new NginxServer();
        using var dir = new TempDir();
        var e = Assert.Throws<FvdException>(() => FvdImage.Create(dir.File("x.fvd"), new FvdCreateOptions { VirtualSize = 1 << 20, BackingFile = web.Url("nope.raw") }));
        Assert.Equal(FvdErrorKind.NotFound, e.Kind);
    }
}
