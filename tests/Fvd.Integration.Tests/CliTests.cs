// fvd-img end to end: every command through Program.Run, checked against the library and the files.
using System.Text.Json;
using Fvd.Core.Format;
using Fvd.Core.Image;

namespace Fvd.Integration.Tests;

public sealed class CliTests : IDisposable
{
    private readonly CliHarness _h = new();
    public void Dispose() => _h.Dispose();

    private const long TemplateSize = 32L << 20;
    private static readonly int[] DataMiB = [1, 5, 20];
    private static readonly int[] ZeroMiB = [8, 9];

    /// <summary>Template + image over it with 4 KiB blocks; returns the template content.</summary>
    private byte[] CreateOverTemplate(string image = "a.fvd", string? size = null)
    {
        var content = _h.MakeTemplate(_h.P("base.raw"), TemplateSize, DataMiB, ZeroMiB);
        var args = new List<string> { "create", "-b", _h.P("base.raw"), "-F", "raw", "-o", "block_size=4k", _h.P(image) };
        if (size is not null) args.Add(size);
        var r = _h.Img([.. args]);
        Assert.True(r.Code == 0, r.Err);
        Assert.StartsWith($"Formatting '{_h.P(image)}', fmt=fvd size=", r.Out);
        return content;
    }

    /// <summary>Rewrites every header copy with the edit applied to the current one.</summary>
    private static void EditHeader(string path, Func<FvdHeader, FvdHeader> edit)
    {
        var h = edit(HeaderSlots.Current(File.ReadAllBytes(path)));
        using var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        fs.Write(HeaderSlots.Initial(h));
    }

    [Fact]
    public void Create_over_template_marks_holes_and_zero_blocks_local()
    {
        CreateOverTemplate(size: "64M");
        var r = _h.Img("info", "--output=json", _h.P("a.fvd"));
        Assert.Equal(0, r.Code);
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        Assert.Equal(64L << 20, root.GetProperty("virtual-size").GetInt64());
        Assert.Equal("fvd", root.GetProperty("format").GetString());
        Assert.Equal(_h.P("base.raw"), root.GetProperty("backing-filename").GetString());
        Assert.Equal("raw", root.GetProperty("backing-filename-format").GetString());
        Assert.False(root.GetProperty("dirty-flag").GetBoolean());
        var d = root.GetProperty("format-specific").GetProperty("data");
        Assert.Equal(4096, d.GetProperty("block-size").GetInt32());
        Assert.Equal(TemplateSize, d.GetProperty("backing-size").GetInt64());
        long blocks = TemplateSize / 4096;
        Assert.Equal(blocks, d.GetProperty("blocks-total").GetInt64());
        // Only the three random MiB stay in the backing; holes and the written-zero MiBs are local.
        Assert.Equal(blocks - 3 * 256, d.GetProperty("blocks-local").GetInt64());
        Assert.True(d.GetProperty("clean").GetBoolean());
        Assert.False(d.GetProperty("inline-data").GetBoolean());
        Assert.Equal("a.data", d.GetProperty("data-file").GetString());
        Assert.Equal(["two-header-slots"], d.GetProperty("incompatible-features").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public void Create_size_defaults_to_backing_and_accepts_suffixes()
    {
        CreateOverTemplate();
        Assert.Equal(TemplateSize, ImageInfo.Read(_h.P("a.fvd")).VirtualSize);
        var r = _h.Img("create", "-o", "inline_data=on,copy_on_read=on,prefetch_delay=30", _h.P("b.fvd"), "1.5M");
        Assert.Equal(0, r.Code);
        var i = ImageInfo.Read(_h.P("b.fvd"));
        Assert.Equal(3L << 19, i.VirtualSize);
        Assert.True(i.InlineData);
        Assert.True(i.CopyOnRead);
        Assert.Equal(30, i.Prefetch.StartDelaySeconds);
    }

    [Fact]
    public void Info_human_lists_the_header_fields()
    {
        CreateOverTemplate();
        var r = _h.Img("info", _h.P("a.fvd"));
        Assert.Equal(0, r.Code);
        foreach (var s in new[] { "file format: fvd", "virtual size: 32 MiB (33554432 bytes)", "disk size:", "block size: 4096",
                     $"backing file: {_h.P("base.raw")}", "backing file format: raw", "data file: a.data", "blocks local: 7424 / 8192",
                     "clean: yes", "prefetch finished: no", "copy on read: off", "start delay: never", "incompatible features: two-header-slots" })
            Assert.Contains(s, r.Out);
    }

    [Fact]
    public void Info_works_while_the_image_is_open_for_writing()
    {
        CreateOverTemplate();
        using var img = FvdImage.Open(_h.P("a.fvd"));
        var r = _h.Img("info", "--output=json", _h.P("a.fvd"));
        Assert.True(r.Code == 0, r.Err);
        Assert.True(JsonDocument.Parse(r.Out).RootElement.GetProperty("dirty-flag").GetBoolean());
    }

    [Fact]
    public void Check_clean_image_exits_0()
    {
        CreateOverTemplate();
        var r = _h.Img("check", _h.P("a.fvd"));
        Assert.Equal(0, r.Code);
        Assert.Contains("No errors were found on the image.", r.Out);
        var j = _h.Img("check", "--output=json", _h.P("a.fvd"));
        Assert.Equal(0, j.Code);
        using var doc = JsonDocument.Parse(j.Out);
        Assert.Equal(0, doc.RootElement.GetProperty("corruptions").GetInt32());
        Assert.Equal(0, doc.RootElement.GetProperty("leaks").GetInt32());
    }

    [Fact]
    public void Check_unclean_exits_3_and_r_leaks_repairs_it()
    {
        CreateOverTemplate();
        EditHeader(_h.P("a.fvd"), h => h with { Flags = h.Flags & ~HeaderFlags.CleanShutdown });
        var r = _h.Img("check", _h.P("a.fvd"));
        Assert.Equal(3, r.Code);
        Assert.Contains("not closed cleanly", r.Out);
        var fix = _h.Img("check", "-r", "leaks", _h.P("a.fvd"));
        Assert.Equal(0, fix.Code);
        Assert.Contains("The following inconsistencies were found and repaired", fix.Out);
        Assert.Equal(0, _h.Img("check", _h.P("a.fvd")).Code);
        Assert.True(ImageInfo.Read(_h.P("a.fvd")).Clean);
    }

    [Fact]
    public void Check_short_data_file_exits_3_and_r_all_extends_it()
    {
        CreateOverTemplate();
        File.WriteAllBytes(_h.P("a.data"), [1, 2, 3]);
        var r = _h.Img("check", _h.P("a.fvd"));
        Assert.Equal(3, r.Code);
        Assert.Contains("shorter than the", r.Out);
        Assert.Equal(0, _h.Img("check", "-r", "all", _h.P("a.fvd")).Code);
        Assert.Equal(TemplateSize, new FileInfo(_h.P("a.data")).Length);
    }

    [Fact]
    public void Check_corrupted_header_exits_2_with_the_reason()
    {
        CreateOverTemplate();
        void Damage(long at)
        {
            using var fs = new FileStream(_h.P("a.fvd"), FileMode.Open, FileAccess.ReadWrite);
            fs.Position = at; // inside virtual_size: the checksum no longer matches
            fs.WriteByte(0x77);
        }
        // One damaged copy: the other serves, and any -r rewrites it.
        Damage(50);
        var one = _h.Img("check", _h.P("a.fvd"));
        Assert.Equal(3, one.Code);
        Assert.Contains("header copy 0 (offset 0) is unusable: header checksum mismatch", one.Out);
        Assert.Equal(0, _h.Img("check", "-r", "leaks", _h.P("a.fvd")).Code);
        // Both copies: corruption that no repair fixes.
        Damage(50);
        Damage(4096 + 50);
        var r = _h.Img("check", _h.P("a.fvd"));
        Assert.Equal(2, r.Code);
        Assert.Contains("header: header checksum mismatch", r.Out);
        Assert.Contains("1 errors were found on the image.", r.Out);
        // A repair cannot fix a header.
        Assert.Equal(2, _h.Img("check", "-r", "all", _h.P("a.fvd")).Code);
    }

    [Fact]
    public void Check_header_with_valid_checksum_but_bad_field_exits_2()
    {
        CreateOverTemplate();
        EditHeader(_h.P("a.fvd"), h => h with { BlockSize = 3000 });
        var r = _h.Img("check", "--output=json", _h.P("a.fvd"));
        Assert.Equal(2, r.Code);
        using var doc = JsonDocument.Parse(r.Out);
        Assert.Equal(1, doc.RootElement.GetProperty("corruptions").GetInt32());
        Assert.Contains("block size 3000", r.Out);
        var info = _h.Img("info", _h.P("a.fvd"));
        Assert.Equal(1, info.Code);
        Assert.Single(info.ErrLines);
        Assert.StartsWith($"fvd-img: {_h.P("a.fvd")}: block size 3000", info.ErrLines[0]);
    }

    [Fact]
    public void Check_bitmap_tail_bits_are_an_error_fixed_by_r_all()
    {
        // 3 blocks of 4 KiB: the bitmap byte has 5 unused bits.
        File.WriteAllBytes(_h.P("small.raw"), new byte[3 * 4096]);
        Assert.Equal(0, _h.Img("create", "-b", _h.P("small.raw"), "-F", "raw", "-o", "zero_aware=off", _h.P("s.fvd")).Code);
        using (var fs = new FileStream(_h.P("s.fvd"), FileMode.Open, FileAccess.ReadWrite))
        {
            fs.Position = 8192; // the bitmap, after the two header copies
            fs.WriteByte(0x80);
        }
        var r = _h.Img("check", _h.P("s.fvd"));
        Assert.Equal(2, r.Code);
        Assert.Contains("bits set past the last block", r.Out);
        Assert.Equal(2, _h.Img("check", "-r", "leaks", _h.P("s.fvd")).Code);
        Assert.Equal(0, _h.Img("check", "-r", "all", _h.P("s.fvd")).Code);
        Assert.Equal(0, _h.Img("check", _h.P("s.fvd")).Code);
    }

    [Fact]
    public void Check_missing_backing_exits_1_and_garbage_exits_1()
    {
        CreateOverTemplate();
        File.Delete(_h.P("base.raw"));
        var r = _h.Img("check", _h.P("a.fvd"));
        Assert.Equal(1, r.Code);
        Assert.Contains("backing file", r.Err);
        Assert.Contains("not found", r.Err);
        File.WriteAllText(_h.P("junk.fvd"), "this is not an image at all");
        var g = _h.Img("check", _h.P("junk.fvd"));
        Assert.Equal(1, g.Code);
        Assert.Contains("not an FVD image", g.Err);
    }

    private sealed record Range(long Start, long Length, int Depth, bool Zero, bool Data);

    private List<Range> MapJson(string image)
    {
        var r = _h.Img("map", "--output=json", image);
        Assert.True(r.Code == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        return doc.RootElement.EnumerateArray().Select(e => new Range(e.GetProperty("start").GetInt64(), e.GetProperty("length").GetInt64(),
            e.GetProperty("depth").GetInt32(), e.GetProperty("zero").GetBoolean(), e.GetProperty("data").GetBoolean())).ToList();
    }

    [Fact]
    public void Map_json_covers_the_disk_with_the_right_kinds()
    {
        CreateOverTemplate(size: "40M");
        using (var img = FvdImage.Open(_h.P("a.fvd")))
        {
            img.Write(12L << 20, new byte[] { 1, 2, 3, 4 }); // a hole block of the backing: local, free write
            img.Write(36L << 20, new byte[8192].Select(_ => (byte)9).ToArray()); // past the backing's end
        }
        var ranges = MapJson(_h.P("a.fvd"));
        long pos = 0;
        foreach (var r in ranges)
        {
            Assert.Equal(pos, r.Start);
            Assert.True(r.Length > 0);
            pos += r.Length;
        }
        Assert.Equal(40L << 20, pos);
        Range At(long off) => ranges.Single(r => r.Start <= off && off < r.Start + r.Length);
        foreach (int m in DataMiB) Assert.Equal(new Range(At((long)m << 20).Start, At((long)m << 20).Length, 1, false, true), At((long)m << 20));
        Assert.Equal((0, true, false), (At(0).Depth, At(0).Zero, At(0).Data));
        Assert.Equal((0, true, false), (At(8L << 20).Depth, At(8L << 20).Zero, At(8L << 20).Data));
        Assert.Equal((0, false, true), (At(12L << 20).Depth, At(12L << 20).Zero, At(12L << 20).Data));
        Assert.Equal((0, false, true), (At(36L << 20).Depth, At(36L << 20).Zero, At(36L << 20).Data));
        Assert.Equal((0, true, false), (At(39L << 20).Depth, At(39L << 20).Zero, At(39L << 20).Data));

        var human = _h.Img("map", _h.P("a.fvd"));
        Assert.Equal(0, human.Code);
        Assert.StartsWith("Offset          Length          Kind            Mapped to       File", human.Out);
        Assert.Contains("0x100000        0x100000        backing         0x100000        " + _h.P("base.raw"), human.Out);
    }

    [Fact]
    public void Convert_raw_to_fvd_to_raw_is_identical_and_sparse()
    {
        var content = _h.MakeTemplate(_h.P("src.raw"), TemplateSize, DataMiB, ZeroMiB);
        var a = _h.Img("convert", "-O", "fvd", _h.P("src.raw"), _h.P("mid.fvd"));
        Assert.True(a.Code == 0, a.Err);
        var b = _h.Img("convert", "-O", "raw", _h.P("mid.fvd"), _h.P("out.raw"));
        Assert.True(b.Code == 0, b.Err);
        Assert.Equal(content, File.ReadAllBytes(_h.P("out.raw")));
        Assert.Equal(0, CliHarness.Exec("cmp", _h.P("src.raw"), _h.P("out.raw")));
        // Only the 3 MiB of random data are allocated: the written-zero MiBs and holes are not copied.
        long data = 3L << 20;
        Assert.InRange(CliHarness.Allocated(_h.P("mid.data")), data, data + (256 << 10));
        Assert.InRange(CliHarness.Allocated(_h.P("out.raw")), data, data + (256 << 10));
        Assert.Equal(TemplateSize, new FileInfo(_h.P("out.raw")).Length);
        // -S 0 writes every byte.
        Assert.Equal(0, _h.Img("convert", "-S", "0", _h.P("mid.fvd"), _h.P("full.raw")).Code);
        Assert.True(CliHarness.Allocated(_h.P("full.raw")) >= TemplateSize);
        Assert.Equal(0, CliHarness.Exec("cmp", _h.P("src.raw"), _h.P("full.raw")));
    }

    [Fact]
    public void Convert_flattens_an_image_with_backing()
    {
        var content = CreateOverTemplate(size: "40M");
        var expected = new byte[40L << 20];
        content.CopyTo(expected, 0);
        using (var img = FvdImage.Open(_h.P("a.fvd")))
        {
            var w = new byte[10000];
            new Random(5).NextBytes(w);
            img.Write((5L << 20) + 100, w); // partly over a backing data block
            w.CopyTo(expected, (5L << 20) + 100);
            img.Write(38L << 20, w);
            w.CopyTo(expected, 38L << 20);
        }
        var r = _h.Img("convert", "-p", "-O", "fvd", "-o", "block_size=64k", _h.P("a.fvd"), _h.P("flat.fvd"));
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("(100.00/100%)", r.Out);
        var info = ImageInfo.Read(_h.P("flat.fvd"));
        Assert.Null(info.BackingFile);
        Assert.Equal(65536, info.BlockSize);
        File.Delete(_h.P("base.raw")); // the flat image no longer needs it
        Assert.Equal(0, _h.Img("convert", "-f", "fvd", _h.P("flat.fvd"), _h.P("flat.raw")).Code);
        Assert.Equal(expected, File.ReadAllBytes(_h.P("flat.raw")));
    }

    [Fact]
    public void Bad_inputs_give_one_line_and_exit_1()
    {
        void Fails(string expected, params string[] args)
        {
            var r = _h.Img(args);
            Assert.Equal(1, r.Code);
            Assert.NotEmpty(r.ErrLines);
            Assert.Contains(expected, r.ErrLines[0]);
            Assert.StartsWith("fvd-img: ", r.ErrLines[0]);
            Assert.DoesNotContain("   at ", r.Err); // no stack trace
        }
        File.WriteAllBytes(_h.P("base.raw"), new byte[1 << 20]);
        File.WriteAllText(_h.P("junk.fvd"), string.Concat(Enumerable.Repeat("garbage ", 1000)));
        Fails($"fvd-img: {_h.P("nope.fvd")}: image not found", "info", _h.P("nope.fvd"));
        Fails("invalid image size '12X'", "create", _h.P("x.fvd"), "12X");
        Fails("unknown output format 'qcow2'", "convert", "-O", "qcow2", _h.P("base.raw"), _h.P("o"));
        Fails("backing file not found", "create", "-b", _h.P("missing.raw"), "-F", "raw", _h.P("y.fvd"));
        Fails("specify -F raw", "create", "-b", _h.P("base.raw"), _h.P("z.fvd"));
        Fails("backing format 'vmdk' is not supported", "create", "-b", _h.P("base.raw"), "-F", "vmdk", _h.P("z.fvd"));
        Fails("not a qcow2 image", "create", "-b", _h.P("base.raw"), "-F", "qcow2", _h.P("z.fvd"));
        Fails($"{_h.P("junk.fvd")}: not an FVD image", "info", _h.P("junk.fvd"));
        Fails($"{_h.P("junk.fvd")}: not an FVD image", "map", _h.P("junk.fvd"));
        Fails("file not found", "convert", _h.P("nothing.raw"), _h.P("o2.raw"));
        Fails("invalid -o option 'colour'", "create", "-o", "colour=red", _h.P("c.fvd"), "1M");
        Fails("Unrecognized command or argument", "frobnicate");
        Fails("file exists", "create", _h.P("base.raw"), "1M");
        Assert.False(File.Exists(_h.P("z.fvd")));
    }

    [Fact]
    public void Help_and_version_exit_0()
    {
        var h = _h.Img("--help");
        Assert.Equal(0, h.Code);
        foreach (var c in new[] { "create", "info", "check", "map", "convert" }) Assert.Contains(c, h.Out);
        Assert.Equal(0, _h.Img("convert", "--help").Code);
        Assert.Equal(0, _h.Img("--version").Code);
        var o = _h.Img("create", "-o", "help", "x");
        Assert.Equal(0, o.Code);
        Assert.Contains("block_size=SIZE", o.Out);
    }

    [Fact]
    public void Create_option_help_states_the_defaults_for_http_templates()
    {
        var o = _h.Img("create", "-o", "help", "x");
        Assert.Equal(0, o.Code);
        string text = System.Text.RegularExpressions.Regex.Replace(o.Out, @"\s+", " ");
        Assert.Contains("zero_aware=on|off mark all-zero backing blocks local at creation (default: on; off for an http(s) backing", text);
        Assert.Contains("copy_on_read=on|off enable copy-on-read by default when the image is opened (default: off; on for an http(s) backing", text);
    }
}
