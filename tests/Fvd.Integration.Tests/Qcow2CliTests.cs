// fvd-img with qcow2 files made by qemu-img: convert -f qcow2, create -F qcow2, info of a qcow2.
using System.Security.Cryptography;
using System.Text.Json;
using Fvd.Core.Tests;

namespace Fvd.Integration.Tests;

public sealed class Qcow2CliTests : IDisposable
{
    private readonly CliHarness _h = new();
    public void Dispose() => _h.Dispose();

    private const long Size = 16L << 20;

    /// <summary>A zstd-compressed qcow2 over a zlib one (as a cloud image with a layer), filled by qemu-io.</summary>
    private string MakeCloudImage()
    {
        Qemu.Require();
        Qemu.Create(_h.P("base.qcow2"), Size, "cluster_size=4096");
        Qemu.Fill(_h.P("base.qcow2"), Size, 4096, seed: 1, compress: true);
        Qemu.Create(_h.P("cloud.qcow2"), Size, "compression_type=zstd", "base.qcow2");
        Qemu.Fill(_h.P("cloud.qcow2"), Size, 65536, seed: 2, compress: true);
        return _h.P("cloud.qcow2");
    }

    private void Ok(params string[] args)
    {
        var r = _h.Img(args);
        Assert.True(r.Code == 0, $"fvd-img {string.Join(' ', args)}: {r.Err}");
    }

    private static bool SameFile(string a, string b) => CliHarness.Exec("cmp", a, b) == 0;

    [Fact]
    public void Convert_f_qcow2_to_raw_is_identical_to_qemu_img_convert_and_sparse()
    {
        string q = MakeCloudImage();
        Qemu.ToRaw(q, _h.P("ref.raw"));
        Ok("convert", "-p", "-f", "qcow2", "-O", "raw", q, _h.P("mine.raw"));
        Assert.True(SameFile(_h.P("ref.raw"), _h.P("mine.raw")), "fvd-img convert -f qcow2 differs from qemu-img convert");
        Assert.True(CliHarness.Allocated(_h.P("mine.raw")) < Size, "holes of the qcow2 were written");
        // Found by magic without -f, and through an fvd output.
        Ok("convert", "-O", "fvd", q, _h.P("flat.fvd"));
        Ok("convert", "-O", "raw", _h.P("flat.fvd"), _h.P("flat.raw"));
        Assert.True(SameFile(_h.P("ref.raw"), _h.P("flat.raw")), "qcow2 -> fvd -> raw differs");
    }

    [Fact]
    public void Create_F_qcow2_reads_the_template_and_writes_never_touch_it()
    {
        string q = MakeCloudImage();
        Qemu.ToRaw(q, _h.P("ref.raw"));
        var sums = new[] { q, _h.P("base.qcow2") }.Select(f => SHA256.HashData(File.ReadAllBytes(f))).ToArray();
        Ok("create", "-q", "-b", "cloud.qcow2", "-F", "qcow2", _h.P("vm.fvd"), "20M");

        var r = _h.Img("info", "--output=json", _h.P("vm.fvd"));
        Assert.Equal(0, r.Code);
        using (var doc = JsonDocument.Parse(r.Out))
        {
            Assert.Equal("qcow2", doc.RootElement.GetProperty("backing-filename-format").GetString());
            var d = doc.RootElement.GetProperty("format-specific").GetProperty("data");
            Assert.Equal(Size, d.GetProperty("backing-size").GetInt64());
            Assert.Equal(Size, d.GetProperty("backing-actual-size").GetInt64()); // the disk's size, not the file's
        }
        Ok("check", _h.P("vm.fvd"));

        // Write through the image, then compare a flattened copy with the template plus the write.
        var expected = File.ReadAllBytes(_h.P("ref.raw"));
        var data = new byte[100_000];
        new Random(3).NextBytes(data);
        using (var img = Fvd.Core.Image.FvdImage.Open(_h.P("vm.fvd")))
        {
            img.Write(1_234_567, data);
            img.Flush();
        }
        data.CopyTo(expected, 1_234_567);
        Ok("convert", "-O", "raw", _h.P("vm.fvd"), _h.P("vm.raw"));
        var got = File.ReadAllBytes(_h.P("vm.raw"));
        Assert.True(got.AsSpan(0, (int)Size).SequenceEqual(expected), "fvd over qcow2 reads differently");
        Assert.True(got.AsSpan((int)Size).IndexOfAnyExcept((byte)0) < 0, "bytes past the template are not zero");
        Assert.Equal(sums[0], SHA256.HashData(File.ReadAllBytes(q)));
        Assert.Equal(sums[1], SHA256.HashData(File.ReadAllBytes(_h.P("base.qcow2"))));
    }

    [Fact]
    public void Info_of_a_qcow2_names_format_size_cluster_version_compression_and_backing()
    {
        string q = MakeCloudImage();
        var r = _h.Img("info", q);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("file format: qcow2", r.Out);
        Assert.Contains($"virtual size: 16 MiB ({Size} bytes)", r.Out);
        Assert.Contains("cluster size: 65536", r.Out);
        Assert.Contains("version: 3", r.Out);
        Assert.Contains("compression type: zstd", r.Out);
        Assert.Contains("backing file: base.qcow2", r.Out);
        Assert.Contains("backing file format: qcow2", r.Out);

        r = _h.Img("info", "-f", "qcow2", "--output=json", q);
        Assert.True(r.Code == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        Assert.Equal("qcow2", doc.RootElement.GetProperty("format").GetString());
        Assert.Equal(Size, doc.RootElement.GetProperty("virtual-size").GetInt64());
        Assert.Equal("zstd", doc.RootElement.GetProperty("format-specific").GetProperty("data").GetProperty("compression-type").GetString());
    }

    [Fact]
    public void A_hostile_qcow2_gives_one_line_and_exit_1()
    {
        Qemu.Require();
        Qemu.Create(_h.P("enc.qcow2"), 1 << 20, "");
        var b = File.ReadAllBytes(_h.P("enc.qcow2"));
        b[35] = 1; // crypt_method = AES
        File.WriteAllBytes(_h.P("enc.qcow2"), b);
        foreach (var args in new[]
        {
            new[] { "convert", "-f", "qcow2", _h.P("enc.qcow2"), _h.P("o.raw") },
            new[] { "create", "-b", _h.P("enc.qcow2"), "-F", "qcow2", _h.P("o.fvd") },
            new[] { "info", _h.P("enc.qcow2") },
        })
        {
            var r = _h.Img(args);
            Assert.Equal(1, r.Code);
            Assert.Single(r.ErrLines);
            Assert.Contains("encrypted qcow2 images are not supported", r.ErrLines[0]);
            Assert.DoesNotContain("   at ", r.Err);
        }
    }
}
