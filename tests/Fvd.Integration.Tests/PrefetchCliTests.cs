// fvd-img prefetch, detach and profile, end to end through Program.Run.
using Fvd.Core.Format;
using Fvd.Core.Image;

namespace Fvd.Integration.Tests;

public sealed class PrefetchCliTests : IDisposable
{
    private readonly CliHarness _h = new();
    public void Dispose() => _h.Dispose();

    [Fact]
    public void Prefetch_then_detach_leaves_a_standalone_image_whose_data_file_is_raw()
    {
        var content = _h.MakeTemplate(_h.P("base.raw"), 8L << 20, [0, 3, 7], []);
        Assert.Equal(0, _h.Img("create", "-b", "base.raw", "-F", "raw", _h.P("a.fvd"), "12M").Code);
        var r = _h.Img("prefetch", "-p", "--max-read", "512M", _h.P("a.fvd"));
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("prefetch finished", r.Out);
        Assert.Contains("(100.00/100%)", r.Out);
        r = _h.Img("detach", _h.P("a.fvd"));
        Assert.True(r.Code == 0, r.Err);
        File.Delete(_h.P("base.raw"));
        Assert.Equal(0, _h.Img("check", _h.P("a.fvd")).Code);
        var data = File.ReadAllBytes(_h.P("a.data"));
        Assert.True(data.AsSpan(0, content.Length).SequenceEqual(content));
        Assert.True(data.AsSpan(content.Length).IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public void Detach_refuses_while_blocks_live_in_the_backing()
    {
        _h.MakeTemplate(_h.P("base.raw"), 4L << 20, [1], []);
        Assert.Equal(0, _h.Img("create", "-b", "base.raw", "-F", "raw", _h.P("a.fvd")).Code);
        var r = _h.Img("detach", _h.P("a.fvd"));
        Assert.Equal(1, r.Code);
        Assert.Single(r.ErrLines);
        Assert.Contains("still live in the backing", r.Err);
    }

    [Fact]
    public void Profile_record_show_and_clear()
    {
        _h.MakeTemplate(_h.P("base.raw"), 4L << 20, [0, 1, 2, 3], []);
        Assert.Equal(0, _h.Img("create", "-b", "base.raw", "-F", "raw", "-o", "block_size=4k", _h.P("a.fvd")).Code);
        File.WriteAllText(_h.P("boot.log"), "# boot reads\n0x200000 8192\n4096 100\n0x200000 4096\n999999999 1\n");
        var r = _h.Img("profile", "record", _h.P("a.fvd"), _h.P("boot.log"));
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("2 ranges (12288 bytes) from 4 reads", r.Out);
        r = _h.Img("profile", "show", _h.P("a.fvd"));
        Assert.Equal("2 ranges, 12288 bytes\n0x200000 0x2000\n0x1000 0x1000\n", r.Out.Replace("\r", ""));
        using (var img = FvdImage.Open(_h.P("a.fvd"), new FvdOpenOptions { ReadOnly = true }))
            Assert.Equal(new (long, long)[] { (0x200000, 0x2000), (0x1000, 0x1000) }, img.PrefetchProfileEntries);
        Assert.Equal(0, _h.Img("profile", "clear", _h.P("a.fvd")).Code);
        Assert.StartsWith("0 ranges", _h.Img("profile", "show", _h.P("a.fvd")).Out);
        Assert.Equal(0, _h.Img("check", _h.P("a.fvd")).Code);
        File.WriteAllText(_h.P("bad.log"), "12 x\n");
        r = _h.Img("profile", "record", _h.P("a.fvd"), _h.P("bad.log"));
        Assert.Equal(1, r.Code);
        Assert.Contains("line 1", r.Err);
    }

    [Fact]
    public void Profile_record_accepts_a_read_of_the_last_sector_of_an_odd_sized_template()
    {
        // 10 MiB + 512: the last 4 KiB block is one sector of template and zeros past it (a GPT backup header).
        _h.MakeTemplate(_h.P("base.raw"), (10L << 20) + 512, [9], []);
        Assert.Equal(0, _h.Img("create", "-b", "base.raw", "-F", "raw", "-o", "block_size=4k", _h.P("a.fvd"), "20M").Code);
        File.WriteAllText(_h.P("boot.log"), "0 4096\n10485760 4096\n");
        var r = _h.Img("profile", "record", _h.P("a.fvd"), _h.P("boot.log"));
        Assert.True(r.Code == 0, r.Err);
        r = _h.Img("profile", "show", _h.P("a.fvd"));
        Assert.Equal("2 ranges, 4608 bytes\n0x0 0x1000\n0xa00000 0x200\n", r.Out.Replace("\r", ""));
        Assert.Equal(0, _h.Img("check", _h.P("a.fvd")).Code);
    }
}
