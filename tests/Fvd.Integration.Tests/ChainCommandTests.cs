// fvd-img over FVD chains and the offline image commands: resize, rebase, commit, compare, info --backing-chain.
using System.Text.Json;
using Fvd.Core;
using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Integration.Tests;

public sealed class ChainCommandTests : IDisposable
{
    private readonly CliHarness _h = new();
    public void Dispose() => _h.Dispose();

    private const int Mi = 1 << 20;

    private CliResult Ok(params string[] args)
    {
        var r = _h.Img(args);
        Assert.True(r.Code == 0, $"fvd-img {string.Join(' ', args)} exited {r.Code}: {r.Err}");
        return r;
    }

    private void Write(string image, long offset, int length, byte value)
    {
        using var img = FvdImage.Open(_h.P(image));
        img.Write(offset, Enumerable.Repeat(value, length).ToArray());
    }

    /// <summary>raw (8 MiB: data at MiB 0, 2, 5) &lt;- a.fvd &lt;- b.fvd &lt;- c.fvd (12 MiB), each with writes of its own.</summary>
    private void MakeChain()
    {
        _h.MakeTemplate(_h.P("base.raw"), 8 * Mi, [0, 2, 5], [3]);
        Ok("create", "-q", "-b", "base.raw", "-F", "raw", _h.P("a.fvd"));
        Write("a.fvd", 100, 5000, 0xA1);
        Ok("create", "-q", "-b", "a.fvd", "-F", "fvd", _h.P("b.fvd"));
        Write("b.fvd", 2 * Mi + 4000, 9000, 0xB2);
        Ok("create", "-q", "-b", "b.fvd", "-F", "fvd", _h.P("c.fvd"), "12M");
        Write("c.fvd", 5 * Mi - 10, 20, 0xC3);
        Write("c.fvd", 10 * Mi, 4096, 0xC4);
    }

    [Fact]
    public void Info_backing_chain_lists_every_image_top_first_in_text_and_json()
    {
        MakeChain();
        var r = Ok("info", "--backing-chain", "--output=json", _h.P("c.fvd"));
        using var doc = JsonDocument.Parse(r.Out);
        var list = doc.RootElement.EnumerateArray().Select(e => (e.GetProperty("filename").GetString(), e.GetProperty("format").GetString())).ToList();
        Assert.Equal([(_h.P("c.fvd"), "fvd"), (_h.P("b.fvd"), "fvd"), (_h.P("a.fvd"), "fvd"), (_h.P("base.raw"), "raw")], list);
        r = Ok("info", "--backing-chain", _h.P("c.fvd"));
        Assert.Equal(4, r.Out.Split("\n\n").Length);
        Assert.Contains("file format: raw", r.Out);
    }

    [Fact]
    public void Compare_exit_codes_and_messages_follow_qemu_img()
    {
        MakeChain();
        Ok("convert", "-O", "raw", _h.P("c.fvd"), _h.P("flat.raw"));
        Assert.Equal("Images are identical.", Ok("compare", _h.P("c.fvd"), _h.P("flat.raw")).Out.Trim());
        Ok("compare", "-f", "raw", "-F", "fvd", _h.P("flat.raw"), _h.P("c.fvd"));

        Write("c.fvd", 3 * Mi + 7, 1, 0x55);
        var r = _h.Img("compare", _h.P("c.fvd"), _h.P("flat.raw"));
        Assert.Equal(1, r.Code);
        Assert.Equal($"Content mismatch at offset {3 * Mi + 7}!", r.Out.Trim());

        // Sizes differ: the extra part must read as zeros (c is 12 MiB; base.raw 8 MiB, flat's first 8 MiB differ).
        Ok("convert", "-O", "raw", _h.P("a.fvd"), _h.P("a.raw"));
        using (var f = new FileStream(_h.P("a12.raw"), FileMode.Create)) { File.OpenRead(_h.P("a.raw")).CopyTo(f); f.SetLength(12 * Mi); }
        Ok("compare", _h.P("a.fvd"), _h.P("a12.raw"));
        r = _h.Img("compare", "-s", _h.P("a.fvd"), _h.P("a12.raw"));
        Assert.Equal((1, "Strict mode: Image size mismatch!"), (r.Code, r.Out.Trim()));
        r = _h.Img("compare", _h.P("a.fvd"), _h.P("flat.raw"));
        Assert.Equal(1, r.Code);

        r = _h.Img("compare", _h.P("c.fvd"), _h.P("missing.raw"));
        Assert.Equal(2, r.Code);
        Assert.Single(r.ErrLines);
        Assert.Equal(2, _h.Img("compare", "-F", "vmdk", _h.P("c.fvd"), _h.P("flat.raw")).Code);
    }

    [Fact]
    public void Resize_grows_then_shrinks_back_and_refuses_to_cut_written_data()
    {
        MakeChain();
        Ok("convert", "-O", "raw", _h.P("c.fvd"), _h.P("flat.raw"));
        Assert.Equal("Image resized.", Ok("resize", _h.P("c.fvd"), "+4M").Out.Trim());
        Assert.Equal(16L * Mi, ImageInfo.Read(_h.P("c.fvd")).VirtualSize);
        Write("c.fvd", 15 * Mi, 10, 0xEE); // the new space takes writes (free-write space)
        Assert.Equal(1, _h.Img("compare", _h.P("c.fvd"), _h.P("flat.raw")).Code);

        var r = _h.Img("resize", _h.P("c.fvd"), "12M");
        Assert.Equal(1, r.Code);
        Assert.Contains("Use the --shrink option to perform a shrink operation.", r.Err);
        r = _h.Img("resize", "--shrink", _h.P("c.fvd"), "12M");
        Assert.Equal(1, r.Code);
        Assert.Contains($"discard data at offset {15 * Mi}", r.Err);
        Assert.Single(r.ErrLines);

        Ok("resize", "--shrink", "--force", _h.P("c.fvd"), "12M");
        Assert.Equal(12L * Mi, ImageInfo.Read(_h.P("c.fvd")).VirtualSize);
        Assert.Equal("Images are identical.", Ok("compare", "-s", _h.P("c.fvd"), _h.P("flat.raw")).Out.Trim());
        // Into the written data and the backing region: refused; an image in use: refused.
        Assert.Equal(1, _h.Img("resize", "--shrink", _h.P("c.fvd"), "10M").Code);
        using (FvdImage.Open(_h.P("c.fvd")))
            Assert.Contains("in use", _h.Img("--no-wait", "resize", _h.P("c.fvd"), "+1M").Err);
        Ok("resize", _h.P("c.fvd"), "+1M");
        Ok("resize", "--shrink", _h.P("c.fvd"), "--", "-1M");
        Assert.Equal(0, _h.Img("check", _h.P("c.fvd")).Code);
        Ok("compare", "-s", _h.P("c.fvd"), _h.P("flat.raw"));
    }

    [Fact]
    public void Growing_never_shows_bytes_a_longer_data_file_held_past_the_old_end()
    {
        Ok("create", "-q", _h.P("g.fvd"), "1M");
        using (var f = new FileStream(_h.P("g.data"), FileMode.Open)) // e.g. left by an earlier, larger disk
        {
            f.Position = Mi;
            f.Write(Enumerable.Repeat((byte)0x77, Mi).ToArray());
        }
        Ok("resize", _h.P("g.fvd"), "2M");
        using var img = FvdImage.Open(_h.P("g.fvd"), new FvdOpenOptions { ReadOnly = true });
        var tail = new byte[Mi];
        img.Read(Mi, tail);
        Assert.True(tail.All(b => b == 0), "bytes past the old end reappeared after growing");
    }

    [Fact]
    public void Shrink_below_the_backing_region_shrinks_the_bitmap()
    {
        _h.MakeTemplate(_h.P("base.raw"), 4 * Mi, [0], []);
        Ok("create", "-q", "-b", "base.raw", "-F", "raw", _h.P("s.fvd"));
        Ok("convert", "-O", "raw", _h.P("s.fvd"), _h.P("flat.raw"));
        Ok("resize", "--shrink", _h.P("s.fvd"), "2M"); // MiB 1..3 are holes: nothing to lose
        var info = ImageInfo.Read(_h.P("s.fvd"));
        Assert.Equal((2L * Mi, 2L * Mi), (info.VirtualSize, info.BackingSize));
        Assert.Equal(0, _h.Img("check", _h.P("s.fvd")).Code);
        Ok("compare", _h.P("s.fvd"), _h.P("flat.raw"));
    }

    [Fact]
    public void Commit_into_an_fvd_then_a_raw_backing_matches_the_flattened_copy()
    {
        MakeChain();
        Ok("convert", "-O", "raw", _h.P("c.fvd"), _h.P("flat.raw"));
        // c is 12 MiB over the 8 MiB b: the backing grows, as qemu-img commit grows a smaller base.
        Assert.Equal("Image committed.", Ok("commit", _h.P("c.fvd")).Out.Trim());
        Assert.Equal(12L * Mi, ImageInfo.Read(_h.P("b.fvd")).VirtualSize);
        Ok("compare", _h.P("b.fvd"), _h.P("flat.raw"));
        Ok("compare", "-s", _h.P("c.fvd"), _h.P("flat.raw"));
        var c = ImageInfo.Read(_h.P("c.fvd"));
        Assert.Equal((0L, 12L * Mi), (c.BlocksLocal, c.BackingSize)); // emptied
        Assert.Equal(0, _h.Img("check", _h.P("c.fvd")).Code);

        Ok("commit", _h.P("b.fvd"));
        Ok("commit", _h.P("a.fvd"));
        Assert.Equal(12L * Mi, new FileInfo(_h.P("base.raw")).Length);
        Assert.Equal("Images are identical.", Ok("compare", _h.P("base.raw"), _h.P("flat.raw")).Out.Trim());
        Ok("compare", _h.P("c.fvd"), _h.P("flat.raw"));
    }

    [Fact]
    public void Commit_refuses_a_backing_another_open_image_reads()
    {
        MakeChain();
        using var reader = FvdImage.Open(_h.P("c.fvd"), new FvdOpenOptions { ReadOnly = true }); // holds b and a shared
        var r = _h.Img("commit", _h.P("b.fvd"));
        Assert.Equal(1, r.Code);
        Assert.Contains("in use", r.Err);
        Assert.Single(r.ErrLines);
        Assert.Equal(1, _h.Img("compare", _h.P("b.fvd"), _h.P("c.fvd")).Code); // b unchanged: c's writes are not in it
        // A sibling over b (as a mounted image would) holds b shared: committing c into b is refused too.
        reader.Dispose();
        Ok("create", "-q", "-b", "b.fvd", "-F", "fvd", _h.P("sibling.fvd"));
        using var sibling = FvdImage.Open(_h.P("sibling.fvd"));
        r = _h.Img("--no-wait", "commit", _h.P("c.fvd"));
        Assert.Equal(1, r.Code);
        Assert.Contains("in use", r.Err);
        Assert.Equal(1, _h.Img("compare", _h.P("b.fvd"), _h.P("c.fvd")).Code);
    }

    [Fact]
    public void Rebase_safe_mode_keeps_the_view_identical()
    {
        MakeChain();
        Ok("convert", "-O", "raw", _h.P("c.fvd"), _h.P("flat.raw"));
        // Skip a and b: c now reads base.raw where a and b held nothing different.
        Ok("rebase", "-b", "base.raw", "-F", "raw", _h.P("c.fvd"));
        Assert.Equal("base.raw", ImageInfo.Read(_h.P("c.fvd")).BackingFile);
        Assert.Equal("Images are identical.", Ok("compare", _h.P("c.fvd"), _h.P("flat.raw")).Out.Trim());
        Assert.Equal(0, _h.Img("check", _h.P("c.fvd")).Code);
        // Back onto b (an fvd backing), then standalone.
        Ok("rebase", "-b", "b.fvd", "-F", "fvd", _h.P("c.fvd"));
        Ok("compare", _h.P("c.fvd"), _h.P("flat.raw"));
        Ok("rebase", "-b", "", _h.P("c.fvd"));
        Assert.Null(ImageInfo.Read(_h.P("c.fvd")).BackingFile);
        Ok("compare", _h.P("c.fvd"), _h.P("flat.raw"));
        Assert.Equal(0, _h.Img("check", _h.P("c.fvd")).Code);
    }

    [Fact]
    public void Rebase_u_only_rewrites_the_reference_and_refuses_a_loop()
    {
        MakeChain();
        Ok("rebase", "-u", "-b", "base.raw", "-F", "raw", _h.P("b.fvd"));
        Assert.Equal("base.raw", ImageInfo.Read(_h.P("b.fvd")).BackingFile);
        // a's writes are no longer seen through b: -u trusts the caller.
        Assert.Equal(1, _h.Img("compare", _h.P("b.fvd"), _h.P("a.fvd")).Code);
        var r = _h.Img("rebase", "-u", "-b", "c.fvd", "-F", "fvd", _h.P("b.fvd"));
        Assert.Equal(1, r.Code);
        Assert.Single(r.ErrLines);
        Assert.Contains("loops back", r.Err);
    }
}
