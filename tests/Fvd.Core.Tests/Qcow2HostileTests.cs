using System.Buffers.Binary;
using System.Text;
using Fvd.Core.Image;
using Fvd.Core.Io;
using Fvd.Core.Qcow2;

namespace Fvd.Core.Tests;

/// <summary>
/// Every qcow2 header and table field is hostile input: one test per validation rule, each on a mutated copy
/// of a small image qemu made. The only acceptable failure is FvdException of the stated kind.
/// </summary>
public sealed class Qcow2HostileTests : IDisposable
{
    private readonly TempDir _dir = new();
    private const int Cluster = 65536;

    public void Dispose() => _dir.Dispose();

    /// <summary>
    /// A 4 MiB v3 image with 64 KiB clusters: data in cluster 0, a compressed cluster 16 (1 MiB), a zero
    /// cluster 32 (2 MiB), with extended L2 entries when asked.
    /// </summary>
    private byte[] Image(bool extendedL2 = false)
    {
        Qemu.Require();
        string q = _dir.File(extendedL2 ? "ext.qcow2" : "t.qcow2");
        Qemu.Create(q, 4 << 20, extendedL2 ? "extended_l2=on" : "");
        Qemu.Run("qemu-io", "-f", "qcow2", "-c", "write -P 7 0 64k", "-c", "write -c -P 9 1M 64k", "-c", "write -z 2M 64k", q);
        return File.ReadAllBytes(q);
    }

    private static void ReadEverything(IBlockDevice d)
    {
        var buf = new byte[d.Length];
        d.Read(0, buf);
        for (long pos = 0; pos < d.Length;) pos = d.GetExtent(pos, d.Length - pos).End;
    }

    private static void Exercise(byte[] img)
    {
        using var d = Qcow2Device.Attach(new MemoryDevice(img, readOnly: true), backing: null, "t.qcow2");
        ReadEverything(d);
    }

    private static void Refused(byte[] img, FvdErrorKind kind, string because)
    {
        var e = Assert.Throws<FvdException>(() => Exercise(img));
        Assert.Equal(kind, e.Kind);
        Assert.Contains(because, e.Message, StringComparison.Ordinal);
    }

    private static byte[] With(byte[] img, Action<byte[]> mutate)
    {
        var copy = (byte[])img.Clone();
        mutate(copy);
        return copy;
    }

    private static void U32(byte[] b, int at, uint v) => BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(at), v);
    private static void U64(byte[] b, int at, ulong v) => BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(at), v);

    private static long L1Offset(byte[] img) => (long)BinaryPrimitives.ReadUInt64BigEndian(img.AsSpan(40));
    private static long L2Offset(byte[] img) => (long)(BinaryPrimitives.ReadUInt64BigEndian(img.AsSpan((int)L1Offset(img))) & 0x00ff_ffff_ffff_fe00);
    private static int L2Entry(byte[] img, int index, bool extended = false) => (int)L2Offset(img) + index * (extended ? 16 : 8);

    [Fact]
    public void The_unmutated_image_reads_as_qemu_wrote_it()
    {
        var img = Image();
        using var d = Qcow2Device.Attach(new MemoryDevice(img, readOnly: true), null);
        var buf = new byte[65536];
        d.Read(0, buf);
        Assert.All(buf, b => Assert.Equal(7, b));
        d.Read(1 << 20, buf);
        Assert.All(buf, b => Assert.Equal(9, b));
        Assert.Equal(ExtentKind.Zero, d.GetExtent(2 << 20, 65536).Kind);
        Assert.Equal(ExtentKind.Data, d.GetExtent(1 << 20, 65536).Kind);
    }

    [Fact] public void Bad_magic() => Refused(With(Image(), b => b[0] = (byte)'X'), FvdErrorKind.InvalidFormat, "bad magic");
    [Fact] public void Version_4() => Refused(With(Image(), b => U32(b, 4, 4)), FvdErrorKind.UnsupportedFeature, "version 4");
    [Fact] public void Cluster_bits_8() => Refused(With(Image(), b => U32(b, 20, 8)), FvdErrorKind.InvalidFormat, "cluster_bits 8");
    [Fact] public void Cluster_bits_22() => Refused(With(Image(), b => U32(b, 20, 22)), FvdErrorKind.InvalidFormat, "cluster_bits 22");
    [Fact] public void Header_length_too_small() => Refused(With(Image(), b => U32(b, 100, 96)), FvdErrorKind.InvalidFormat, "header_length");
    [Fact] public void Header_length_not_a_multiple_of_8() => Refused(With(Image(), b => U32(b, 100, 109)), FvdErrorKind.InvalidFormat, "header_length");
    [Fact] public void Header_length_past_the_first_cluster() => Refused(With(Image(), b => U32(b, 100, Cluster + 8)), FvdErrorKind.InvalidFormat, "header_length");
    [Fact] public void Encrypted() => Refused(With(Image(), b => U32(b, 32, 1)), FvdErrorKind.UnsupportedFeature, "encrypted");
    [Fact] public void External_data_file_bit() => Refused(With(Image(), b => b[79] |= 1 << 2), FvdErrorKind.UnsupportedFeature, "external data file");
    [Fact] public void Unknown_incompatible_bit() => Refused(With(Image(), b => b[79] |= 1 << 5), FvdErrorKind.UnsupportedFeature, "unknown incompatible features 0x20");
    [Fact] public void Compression_type_without_its_feature_bit() => Refused(With(Image(), b => b[104] = 1), FvdErrorKind.InvalidFormat, "compression_type 1");
    [Fact] public void Unknown_compression_type() => Refused(With(Image(), b => { b[104] = 2; b[79] |= 1 << 3; }), FvdErrorKind.UnsupportedFeature, "compression type 2");
    [Fact] public void Zero_virtual_size() => Refused(With(Image(), b => U64(b, 24, 0)), FvdErrorKind.InvalidFormat, "virtual size 0");
    [Fact] public void Virtual_size_beyond_the_L1_table() => Refused(With(Image(), b => U64(b, 24, 1UL << 40)), FvdErrorKind.InvalidFormat, "too small");
    [Fact] public void Huge_l1_size() => Refused(With(Image(), b => U32(b, 36, uint.MaxValue)), FvdErrorKind.InvalidFormat, "exceeds");
    [Fact] public void L1_size_zero_for_a_non_empty_disk() => Refused(With(Image(), b => U32(b, 36, 0)), FvdErrorKind.InvalidFormat, "too small");
    [Fact] public void L1_offset_unaligned() => Refused(With(Image(), b => U64(b, 40, (ulong)L1Offset(b) + 512)), FvdErrorKind.InvalidFormat, "multiple of the cluster size");
    [Fact] public void L1_offset_outside_the_file() => Refused(With(Image(), b => U64(b, 40, (ulong)(b.Length / Cluster + 2) * Cluster)), FvdErrorKind.InvalidFormat, "outside");
    [Fact] public void Backing_name_outside_the_first_cluster() => Refused(With(Image(), b => { U64(b, 8, Cluster - 4); U32(b, 16, 10); }), FvdErrorKind.InvalidFormat, "backing file name");
    [Fact] public void Backing_name_too_long() => Refused(With(Image(), b => { U64(b, 8, 4096); U32(b, 16, 2000); }), FvdErrorKind.InvalidFormat, "backing_file_size 2000");
    [Fact] public void Header_extension_running_past_the_cluster() => Refused(With(Image(), b => { U32(b, 104 + 8, 0x12345678); U32(b, 104 + 12, 0x7fffffff); }), FvdErrorKind.InvalidFormat, "runs past");

    [Fact]
    public void Refcount_fields_are_ignored()
    {
        var img = Image();
        var reference = new byte[4 << 20];
        using (var d = Qcow2Device.Attach(new MemoryDevice(img, readOnly: true), null)) d.Read(0, reference);
        var mutated = With(img, b => { U32(b, 96, 99); U64(b, 48, 12345); U32(b, 56, uint.MaxValue); });
        using var m = Qcow2Device.Attach(new MemoryDevice(mutated, readOnly: true), null);
        var got = new byte[4 << 20];
        m.Read(0, got);
        Assert.Equal(reference, got);
    }

    [Fact] public void L1_entry_pointing_outside_the_file() => Refused(With(Image(), b => U64(b, (int)L1Offset(b), (ulong)(b.Length / Cluster + 2) * Cluster)), FvdErrorKind.CorruptImage, "outside");
    [Fact] public void L1_entry_unaligned() => Refused(With(Image(), b => U64(b, (int)L1Offset(b), (ulong)L2Offset(b) + 512)), FvdErrorKind.CorruptImage, "not cluster-aligned");
    [Fact] public void L2_entry_unaligned() => Refused(With(Image(), b => U64(b, L2Entry(b, 0), BinaryPrimitives.ReadUInt64BigEndian(b.AsSpan(L2Entry(b, 0))) + 512)), FvdErrorKind.CorruptImage, "not cluster-aligned");
    [Fact] public void L2_entry_outside_the_file() => Refused(With(Image(), b => U64(b, L2Entry(b, 0), (1UL << 63) | (ulong)(b.Length / Cluster + 2) * Cluster)), FvdErrorKind.CorruptImage, "outside");

    [Fact]
    public void Compressed_descriptor_outside_the_file()
    {
        // Cluster 16 is compressed; keep its flag and size bits, move the offset past the end of the file.
        Refused(With(Image(), b =>
        {
            int at = L2Entry(b, 16);
            ulong e = BinaryPrimitives.ReadUInt64BigEndian(b.AsSpan(at));
            Assert.NotEqual(0UL, e & (1UL << 62));
            const int shift = 62 - (16 - 8);
            U64(b, at, (e & ~((1UL << shift) - 1)) | (uint)(b.Length + 100));
        }), FvdErrorKind.CorruptImage, "compressed cluster");
    }

    [Fact]
    public void Compressed_data_that_does_not_inflate()
    {
        Refused(With(Image(), b =>
        {
            ulong e = BinaryPrimitives.ReadUInt64BigEndian(b.AsSpan(L2Entry(b, 16)));
            long off = (long)(e & ((1UL << (62 - 8)) - 1));
            b.AsSpan((int)off, 64).Fill(0xff);
        }), FvdErrorKind.CorruptImage, "compressed cluster");
    }

    [Fact]
    public void Extended_subcluster_both_allocated_and_zero()
    {
        Refused(With(Image(extendedL2: true), b =>
        {
            int at = L2Entry(b, 0, extended: true);
            U64(b, at + 8, 0x0000_0001_0000_0001); // subcluster 0: allocated and zero
        }), FvdErrorKind.CorruptImage, "both allocated and zero");
    }

    [Fact]
    public void Extended_allocated_subclusters_in_an_unallocated_cluster()
    {
        Refused(With(Image(extendedL2: true), b => U64(b, L2Entry(b, 5, extended: true) + 8, 1)), FvdErrorKind.CorruptImage, "unallocated cluster");
    }

    private string Rebase(string image, string backing, string? format)
    {
        var args = new List<string> { "rebase", "-u", "-f", "qcow2", "-b", backing };
        if (format is not null) args.AddRange(["-F", format]);
        args.Add(image);
        Qemu.Run("qemu-img", [.. args]);
        return image;
    }

    private static FvdException OpenFails(string path) =>
        Assert.Throws<FvdException>(() => FvdImage.OpenBacking(path, "qcow2", new FvdOpenOptions()).Dispose());

    [Fact]
    public void Backing_loop_of_two_files_is_refused()
    {
        Qemu.Require();
        Qemu.Create(_dir.File("a.qcow2"), 1 << 20, "");
        Qemu.Create(_dir.File("b.qcow2"), 1 << 20, "", "a.qcow2");
        Rebase(_dir.File("a.qcow2"), "b.qcow2", "qcow2");
        var e = OpenFails(_dir.File("a.qcow2"));
        Assert.Equal(FvdErrorKind.InvalidFormat, e.Kind);
        Assert.Contains("loops", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Backing_loop_to_itself_through_a_symlink_is_refused()
    {
        Qemu.Require();
        Qemu.Create(_dir.File("a.qcow2"), 1 << 20, "");
        File.CreateSymbolicLink(_dir.File("alias.qcow2"), "a.qcow2");
        Rebase(_dir.File("a.qcow2"), "alias.qcow2", "qcow2");
        var e = OpenFails(_dir.File("a.qcow2"));
        Assert.Equal(FvdErrorKind.InvalidFormat, e.Kind);
        Assert.Contains("loops", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Backing_without_a_recorded_format_is_refused_not_probed()
    {
        Qemu.Require();
        File.WriteAllBytes(_dir.File("base.raw"), new byte[1 << 20]);
        Qemu.Create(_dir.File("top.qcow2"), 1 << 20, "");
        var b = File.ReadAllBytes(_dir.File("top.qcow2"));
        var name = Encoding.UTF8.GetBytes("base.raw");
        name.CopyTo(b, 4096);
        U64(b, 8, 4096);
        U32(b, 16, (uint)name.Length);
        File.WriteAllBytes(_dir.File("top.qcow2"), b);
        var e = OpenFails(_dir.File("top.qcow2"));
        Assert.Equal(FvdErrorKind.UnsupportedFeature, e.Kind);
        Assert.Contains("not its format", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Protocol_backing_name_is_refused()
    {
        Qemu.Require();
        Qemu.Create(_dir.File("top.qcow2"), 1 << 20, "");
        Rebase(_dir.File("top.qcow2"), "nbd:localhost:10809", "raw");
        var e = OpenFails(_dir.File("top.qcow2"));
        Assert.Equal(FvdErrorKind.InvalidFormat, e.Kind);
        Assert.Contains("protocol", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_chain_obeys_the_backing_file_policy()
    {
        // A FIFO would block the open forever; a character device is never an image.
        Qemu.Require();
        Qemu.Create(_dir.File("top.qcow2"), 1 << 20, "");
        foreach (var (name, target) in new[] { ("pipe", (string?)null), ("zero", "/dev/zero") })
        {
            if (target is null) Assert.Equal(0, Mono.Unix.Native.Syscall.mkfifo(_dir.File(name), Mono.Unix.Native.FilePermissions.ALLPERMS));
            else File.CreateSymbolicLink(_dir.File(name), target);
            Rebase(_dir.File("top.qcow2"), name, "raw");
            var e = OpenFails(_dir.File("top.qcow2"));
            Assert.Equal(FvdErrorKind.PermissionDenied, e.Kind);
        }
    }

    [Fact]
    public void Convert_and_create_never_write_over_a_file_of_the_qcow2_chain()
    {
        Qemu.Require();
        var raw = new byte[1 << 20];
        new Random(4).NextBytes(raw);
        File.WriteAllBytes(_dir.File("base.raw"), raw);
        Qemu.Create(_dir.File("mid.qcow2"), 1 << 20, "", "base.raw", "raw");
        Qemu.Create(_dir.File("top.qcow2"), 1 << 20, "", "mid.qcow2");
        File.CreateSymbolicLink(_dir.File("alias.raw"), "base.raw");
        foreach (var target in new[] { "base.raw", "alias.raw", "mid.qcow2" })
        {
            var e = Assert.Throws<FvdException>(() => Converter.Convert(_dir.File("top.qcow2"), _dir.File(target),
                new ConvertOptions { SourceFormat = "qcow2", TargetFormat = "raw" }));
            Assert.Equal(FvdErrorKind.InvalidArgument, e.Kind);
            Assert.Contains("qcow2 backing chain", e.Message, StringComparison.Ordinal);
        }
        Assert.Equal(raw, File.ReadAllBytes(_dir.File("base.raw")));

        // Nor does create, whose data file is made with overwrite.
        var c = Assert.Throws<FvdException>(() => FvdImage.Create(_dir.File("vm.fvd"),
            new FvdCreateOptions { VirtualSize = 1 << 20, BackingFile = "top.qcow2", BackingFormat = "qcow2", DataFile = "base.raw" }));
        Assert.Equal(FvdErrorKind.InvalidArgument, c.Kind);
        Assert.Contains("qcow2 backing chain", c.Message, StringComparison.Ordinal);
        Assert.Equal(raw, File.ReadAllBytes(_dir.File("base.raw")));
    }

    [Fact]
    public void Truncated_file_is_refused_at_every_length()
    {
        var img = Image();
        foreach (int len in new[] { 0, 3, 71, 72, 103, 104, 4096, Cluster, (int)L1Offset(img) + 4, (int)L2Offset(img) + 100, img.Length - 1 })
        {
            try
            {
                Exercise(img[..len]);
            }
            catch (FvdException)
            {
                // Refused, or read past what is there: both are fine; any other exception type fails the test.
            }
        }
    }
}
