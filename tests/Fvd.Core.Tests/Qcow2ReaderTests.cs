using System.Security.Cryptography;
using Fvd.Core.Image;
using Fvd.Core.Io;
using Fvd.Core.Qcow2;

namespace Fvd.Core.Tests;

/// <summary>
/// The qcow2 reader against qemu on images qemu makes now: every variant is filled with a seeded mix of
/// unaligned pattern writes, zero writes, discards and compressed writes, then read four ways.
/// </summary>
public sealed class Qcow2ReaderTests : IDisposable
{
    private readonly TempDir _dir = new();
    private const long Size = (6L << 20) + 1536; // a partial last cluster

    public void Dispose() => _dir.Dispose();

    // name -> (qemu-img create -o, cluster size, compressed writes, backing: none / qcow2 / raw)
    public static readonly TheoryData<string> Variants = new()
    {
        "plain", "cluster4k", "cluster512", "cluster2m", "zlib", "zstd", "extended_l2", "extended_l2_zstd",
        "v2", "qcow2_backing", "raw_backing", "chain3",
    };

    private static (string Options, int Cluster, bool Compress) Spec(string v) => v switch
    {
        "plain" => ("", 65536, false),
        "cluster4k" => ("cluster_size=4096", 4096, true),
        "cluster512" => ("cluster_size=512", 512, true),
        "cluster2m" => ("cluster_size=2M", 2 << 20, false),
        "zlib" => ("", 65536, true),
        "zstd" => ("compression_type=zstd", 65536, true),
        "extended_l2" => ("extended_l2=on", 65536, false),
        "extended_l2_zstd" => ("extended_l2=on,compression_type=zstd,cluster_size=32k", 32768, true),
        "v2" => ("compat=0.10", 65536, true),
        _ => ("", 65536, true),
    };

    /// <summary>Makes the variant's image (and its backings); returns its path.</summary>
    private string Make(string variant, int seed = 7)
    {
        Qemu.Require();
        var (opts, cluster, compress) = Spec(variant);
        string top = _dir.File(variant + ".qcow2");
        switch (variant)
        {
            case "qcow2_backing":
                Qemu.Create(_dir.File("base.qcow2"), Size - 4096, "cluster_size=4096"); // shorter than the top
                Qemu.Fill(_dir.File("base.qcow2"), Size - 4096, 4096, seed + 1, compress: true);
                Qemu.Create(top, Size, opts, "base.qcow2");
                break;
            case "raw_backing":
                using (var fs = new FileStream(_dir.File("base.raw"), FileMode.Create))
                {
                    var data = new byte[1 << 20];
                    new Random(seed).NextBytes(data);
                    fs.SetLength(Size);
                    fs.Position = 2 << 20; // a hole before and after: qemu maps the holes as zero, so must we
                    fs.Write(data);
                }
                Qemu.Create(top, Size, opts, "base.raw", "raw");
                break;
            case "chain3":
                Qemu.Create(_dir.File("c0.qcow2"), Size, "compat=0.10");
                Qemu.Fill(_dir.File("c0.qcow2"), Size, cluster, seed + 2, compress: true);
                Qemu.Create(_dir.File("c1.qcow2"), Size, "compression_type=zstd", "c0.qcow2");
                Qemu.Fill(_dir.File("c1.qcow2"), Size, cluster, seed + 3, compress: true);
                Qemu.Create(top, Size, "extended_l2=on", "c1.qcow2");
                break;
            default:
                Qemu.Create(top, Size, opts);
                break;
        }
        Qemu.Fill(top, Size, cluster, seed, compress);
        // Random writes cover all three big clusters; make one a zero cluster.
        if (variant == "cluster2m") Qemu.Run("qemu-io", "-f", "qcow2", "-c", $"write -z {2 << 20} {2 << 20}", top);
        return top;
    }

    private static Qcow2Device OpenQcow2(string path, long cacheBytes = Qcow2Device.DefaultCacheBytes) =>
        Qcow2Device.Open(path, p => FileDevice.Open(p, readOnly: true), cacheBytes);

    private static void SameBytes(byte[] expected, byte[] got, string what)
    {
        Assert.Equal(expected.Length, got.Length);
        int p = got.AsSpan().CommonPrefixLength(expected);
        Assert.True(p == expected.Length, $"{what}: first difference at byte {p}");
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void Convert_to_raw_is_byte_identical_to_qemu_img_convert(string variant)
    {
        string q = Make(variant);
        var expected = Qemu.ToRaw(q, _dir.File("ref.raw"));
        Converter.Convert(q, _dir.File("mine.raw"), new ConvertOptions { SourceFormat = "qcow2", TargetFormat = "raw" });
        SameBytes(expected, File.ReadAllBytes(_dir.File("mine.raw")), variant);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void Random_reads_from_concurrent_threads_equal_the_raw_conversion(string variant)
    {
        string q = Make(variant);
        var expected = Qemu.ToRaw(q, _dir.File("ref.raw"));
        // A cache of one table forces evictions while four threads read.
        using var dev = OpenQcow2(q, cacheBytes: 1);
        Assert.Equal(expected.Length, dev.Length);
        Parallel.For(0, 4, t =>
        {
            var rnd = new Random(100 + t);
            var buf = new byte[300_000];
            for (int i = 0; i < 300; i++)
            {
                long off = rnd.NextInt64(expected.Length);
                int len = (int)Math.Min(expected.Length - off, 1 + rnd.Next(i % 3 == 0 ? buf.Length : 9000));
                var span = buf.AsSpan(0, len);
                dev.Read(off, span);
                int p = span.CommonPrefixLength(expected.AsSpan((int)off, len));
                Assert.True(p == len, $"{variant}: read [{off}, +{len}) differs at +{p} (thread {t}, read {i})");
            }
        });
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void Extents_agree_with_qemu_img_map_zero_flags(string variant)
    {
        string q = Make(variant);
        var map = Qemu.Map(q);
        using var dev = OpenQcow2(q);
        var ours = new List<Extent>();
        for (long pos = 0; pos < dev.Length;)
        {
            var e = dev.GetExtent(pos, dev.Length - pos);
            Assert.True(e.Offset == pos && e.Length > 0, $"extent at {pos}: {e}");
            ours.Add(e);
            pos = e.End;
        }
        Assert.Contains(map, m => m.Zero);
        foreach (var m in map)
            foreach (var e in ours.Where(e => e.Offset < m.Start + m.Length && e.End > m.Start))
                Assert.True((e.Kind == ExtentKind.Zero) == m.Zero,
                    $"{variant}: qemu says [{m.Start}, +{m.Length}) zero={m.Zero}, we say {e}");
    }

    [Theory]
    [InlineData("zlib")]
    [InlineData("extended_l2_zstd")]
    [InlineData("chain3")]
    public void An_fvd_image_over_the_qcow2_reads_its_bytes_and_writes_leave_it_unchanged(string variant)
    {
        string q = Make(variant);
        var expected = Qemu.ToRaw(q, _dir.File("ref.raw"));
        var sums = Directory.GetFiles(_dir.Path, "*.qcow2").ToDictionary(f => f, f => SHA256.HashData(File.ReadAllBytes(f)));
        string vm = _dir.File("vm.fvd");
        FvdImage.Create(vm, new FvdCreateOptions { VirtualSize = Size + (1 << 20), BackingFile = Path.GetFileName(q), BackingFormat = "qcow2", BlockSize = 4096 });
        using (var img = FvdImage.Open(vm))
        {
            var all = new byte[Size];
            img.Read(0, all);
            SameBytes(expected, all, "fvd over qcow2 before writes");
            var rnd = new Random(5);
            for (int i = 0; i < 30; i++)
            {
                long off = rnd.NextInt64(Size - 70_000);
                var data = new byte[1 + rnd.Next(70_000)];
                rnd.NextBytes(data);
                img.Write(off, data);
                data.CopyTo(expected, off);
            }
            img.Flush();
        }
        using (var img = FvdImage.Open(vm, new FvdOpenOptions { ReadOnly = true }))
        {
            var all = new byte[Size];
            img.Read(0, all);
            SameBytes(expected, all, "fvd over qcow2 after writes and reopen");
        }
        foreach (var (f, sum) in sums) Assert.Equal(sum, SHA256.HashData(File.ReadAllBytes(f)));
    }

    [Fact]
    public void A_read_fetches_only_its_L2_table_and_its_bytes_and_the_table_is_cached()
    {
        Qemu.Require();
        string q = _dir.File("full.qcow2");
        Qemu.Create(q, 8 << 20, "");
        Qemu.Run("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 8M", q);
        var rec = new RecordingDevice(FileDevice.Open(q, readOnly: true)) { RecordReads = true };
        using var dev = Qcow2Device.Attach(rec, backing: null, q);
        int opened = rec.Operations.Length; // header and L1 table
        dev.Read((3 << 20) + 100, new byte[4096]);
        var ops = rec.Operations[opened..];
        Assert.Equal(2, ops.Length);
        Assert.Equal(65536, ops[0].Length); // the L2 table
        Assert.Equal(4096, ops[1].Length);  // the bytes asked for
        dev.Read(5 << 20, new byte[512]);
        Assert.Single(rec.Operations[(opened + 2)..]); // same L2 table: from the cache
    }

    [Fact]
    public void Small_reads_of_a_compressed_cluster_inflate_it_once()
    {
        Qemu.Require();
        string q = _dir.File("c.qcow2");
        Qemu.Create(q, 1 << 20, "");
        Qemu.Run("qemu-io", "-f", "qcow2", "-c", "write -c -P 5 64k 64k", q);
        var rec = new RecordingDevice(FileDevice.Open(q, readOnly: true)) { RecordReads = true };
        using var dev = Qcow2Device.Attach(rec, backing: null, q);
        int opened = rec.Operations.Length; // header and L1 table
        var buf = new byte[4096];
        for (int i = 0; i < 16; i++)
        {
            dev.Read(65536 + i * 4096, buf);
            Assert.All(buf, b => Assert.Equal(5, b));
        }
        // One L2 table read and one read of the compressed bytes.
        Assert.Equal(2, rec.Operations.Length - opened);
    }

    [Fact]
    public void A_qcow2_chain_over_http_resolves_its_backing_on_the_same_server()
    {
        Qemu.Require();
        using var web = new NginxServer();
        string q = Make("qcow2_backing");
        var expected = Qemu.ToRaw(q, _dir.File("ref.raw"));
        File.Copy(q, Path.Combine(web.Root, "top.qcow2"));
        File.Copy(_dir.File("base.qcow2"), Path.Combine(web.Root, "base.qcow2")); // named "base.qcow2" in top.qcow2
        string vm = _dir.File("vm.fvd");
        FvdImage.Create(vm, new FvdCreateOptions { VirtualSize = Size, BackingFile = web.Url("top.qcow2"), BackingFormat = "qcow2" });
        using var img = FvdImage.Open(vm, new FvdOpenOptions { ReadOnly = true });
        var all = new byte[Size];
        img.Read(0, all);
        SameBytes(expected, all, "fvd over an http qcow2 chain");
    }

    [Fact]
    public void Zero_aware_creation_takes_zeros_from_the_tables_without_reading_data()
    {
        Qemu.Require();
        string q = _dir.File("sparse.qcow2");
        Qemu.Create(q, 8 << 20, "");
        Qemu.Run("qemu-io", "-f", "qcow2", "-c", "write -P 1 1M 64k", "-c", "write -z 3M 1M", "-c", "write -P 0 5M 64k", q);
        string vm = _dir.File("vm.fvd");
        FvdImage.Create(vm, new FvdCreateOptions { VirtualSize = 8 << 20, BackingFile = q, BackingFormat = "qcow2", BlockSize = 65536 });
        using var img = FvdImage.Open(vm, new FvdOpenOptions { ReadOnly = true });
        // Only the two allocated clusters still come from the backing: zeros written as data (5M) count as
        // data, since the qcow2's data is never read to look for zeros.
        Assert.Equal(128 - 2, img.Bitmap.CountSet());
    }
}
