using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using Fvd.Core.Format;
using Fvd.Core.Image;

namespace Fvd.Core.Tests;

/// <summary>A small valid image on disk whose header tests mutate (docs/architecture.md §5).</summary>
public sealed class HostileImage : IDisposable
{
    public TempDir Dir { get; } = new();
    public string Image => Dir.File("t.fvd");
    public string Backing => Dir.File("base.raw");
    public string Data => Dir.File("t.data");
    public const int BackingLength = 40_000; // 79 blocks of 512 -> 10-byte bitmap

    public HostileImage(bool inline = false, int blockSize = 512, long virtualSize = 65536)
    {
        var b = new byte[BackingLength];
        new Random(1).NextBytes(b);
        File.WriteAllBytes(Backing, b);
        FvdImage.Create(Image, new FvdCreateOptions { VirtualSize = virtualSize, BackingFile = "base.raw", BlockSize = blockSize, InlineData = inline, ZeroAware = false });
        Slots = FvdHeader.Parse(Header()).TwoSlots ? HeaderSlots.Count : 1;
    }

    /// <summary>Header copies the image has (two for images made now).</summary>
    public int Slots { get; }

    public byte[] Header(int slot = 0) => File.ReadAllBytes(Image).AsSpan((int)HeaderSlots.Offset(slot), FvdHeader.Size).ToArray();

    /// <summary>Recomputes the CRC of the header copy at offset `at` of h.</summary>
    public static void FixCrc(byte[] h, int at = 0)
    {
        if (h.Length < at + FvdHeader.Size) return;
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(at + 16), 0);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(at + 16), Crc32C.Compute(h.AsSpan(at, FvdHeader.Size)));
    }

    /// <summary>
    /// Applies mutate to every header copy, recomputes the CRC (unless told not to) and writes them back, so
    /// no good copy is left to fall back on.
    /// </summary>
    public void Mutate(Action<byte[]> mutate, bool fixCrc = true)
    {
        for (int slot = 0; slot < Slots; slot++) MutateSlot(slot, mutate, fixCrc);
    }

    /// <summary>Applies mutate to one header copy.</summary>
    public void MutateSlot(int slot, Action<byte[]> mutate, bool fixCrc = true)
    {
        var h = Header(slot);
        mutate(h);
        if (fixCrc) FixCrc(h);
        using var f = new FileStream(Image, FileMode.Open, FileAccess.Write);
        f.Position = HeaderSlots.Offset(slot);
        f.Write(h);
    }

    public void SetU32(int off, uint v) => Mutate(h => BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(off), v));
    public void SetI32(int off, int v) => Mutate(h => BinaryPrimitives.WriteInt32LittleEndian(h.AsSpan(off), v));
    public void SetI64(int off, long v) => Mutate(h => BinaryPrimitives.WriteInt64LittleEndian(h.AsSpan(off), v));
    public void SetString(int off, int field, byte[] value) => Mutate(h => { h.AsSpan(off, field).Clear(); value.CopyTo(h, off); });

    /// <summary>Opens and expects an FvdException of the kind, whose message contains every fragment.</summary>
    public FvdException ExpectFailure(FvdErrorKind kind, params string[] fragments) => ExpectFailure(kind, null, fragments);

    public FvdException ExpectFailure(FvdErrorKind kind, FvdOpenOptions? o, params string[] fragments)
    {
        FvdException? e = null;
        try
        {
            using var img = FvdImage.Open(Image, o);
        }
        catch (FvdException x) { e = x; }
        // Any other exception type escapes here and fails the test with its own stack trace.
        Assert.True(e is not null, "open succeeded but should have failed");
        Assert.True(e!.Kind == kind, $"kind {e.Kind}, expected {kind}: {e.Message}");
        foreach (var f in fragments) Assert.Contains(f, e.Message, StringComparison.OrdinalIgnoreCase);
        Assert.NotNull(e.FilePath);
        return e;
    }

    public void Dispose() => Dir.Dispose();
}

public class HostileHeaderTests
{
    [Fact]
    public void ValidImageOpens()
    {
        using var h = new HostileImage();
        using var img = FvdImage.Open(h.Image);
        Assert.Equal(79, img.Bitmap.Blocks);
        Assert.Equal(10, img.Header.BitmapLength);
        using var h2 = new HostileImage(inline: true);
        using var img2 = FvdImage.Open(h2.Image);
        Assert.True(img2.Header.InlineData);
    }

    [Fact]
    public void BadMagic()
    {
        using var h = new HostileImage();
        h.Mutate(b => b[0] = (byte)'Q');
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "magic");
        h.Mutate(b => b[7] = 0);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "magic");
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(2u)]
    [InlineData(uint.MaxValue)]
    public void BadVersion(uint v)
    {
        using var h = new HostileImage();
        h.SetU32(8, v);
        h.ExpectFailure(FvdErrorKind.UnsupportedFeature, "version", v.ToString());
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(512u)]
    [InlineData(4097u)]
    [InlineData(uint.MaxValue)]
    public void BadHeaderSize(uint v)
    {
        using var h = new HostileImage();
        h.SetU32(12, v);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "header size");
    }

    [Fact]
    public void BadCrc()
    {
        using var h = new HostileImage();
        h.Mutate(b => b[16] ^= 1, fixCrc: false);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "checksum");
        using var h2 = new HostileImage();
        h2.Mutate(b => b[4000] = 1, fixCrc: false); // a reserved byte: still covered by the CRC
        h2.ExpectFailure(FvdErrorKind.InvalidFormat, "checksum");
    }

    [Theory]
    [InlineData(1UL << 1, "compact table")]
    [InlineData(1UL << 2, "journal")]
    [InlineData(1UL << 3, "snapshots")]
    [InlineData(1UL << 6, "unknown bits 0x40")]
    [InlineData(1UL << 63, "unknown bits 0x8000000000000000")]
    public void UnknownIncompatibleFeature(ulong bit, string name)
    {
        using var h = new HostileImage();
        h.SetI64(24, (long)bit);
        h.ExpectFailure(FvdErrorKind.UnsupportedFeature, "incompatible", name);
    }

    [Fact]
    public void UnknownCompatibleFeatureIsIgnored()
    {
        using var h = new HostileImage();
        h.SetI64(32, 1L << 40);
        using var img = FvdImage.Open(h.Image, new FvdOpenOptions { ReadOnly = true });
    }

    [Fact]
    public void CorruptFlagForcesReadOnly()
    {
        using var h = new HostileImage();
        h.Mutate(b => b[24] |= (byte)IncompatibleFeatures.Corrupt);
        h.ExpectFailure(FvdErrorKind.CorruptImage, "corrupt");
        using var img = FvdImage.Open(h.Image, new FvdOpenOptions { ReadOnly = true });
        Assert.True(img.IsReadOnly);
    }

    [Theory]
    [InlineData(1u << 3)]
    [InlineData(1u << 31)]
    public void UnknownFlags(uint f)
    {
        using var h = new HostileImage();
        h.SetU32(20, f | 1);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "flags", $"0x{f:x}");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(256)]
    [InlineData(768)]
    [InlineData(32 << 20)]
    [InlineData(int.MinValue)]
    [InlineData(-512)]
    public void BadBlockSize(int bs)
    {
        using var h = new HostileImage();
        h.SetI32(56, bs);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "block size", bs.ToString());
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(-1L)]
    [InlineData(-512L)]
    [InlineData(1000L)]
    [InlineData(65537L)]
    [InlineData((64L << 40) + 512)]
    [InlineData(long.MaxValue)]
    [InlineData(long.MinValue)]
    public void BadVirtualSize(long v)
    {
        using var h = new HostileImage();
        h.SetI64(48, v);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "virtual size", v.ToString());
    }

    [Theory]
    [InlineData(-1L)]
    [InlineData(long.MinValue)]
    [InlineData(long.MaxValue)]
    [InlineData(long.MaxValue - 511)]
    [InlineData((64L << 40) + 1)]
    public void BadBackingSize(long v)
    {
        using var h = new HostileImage();
        h.SetI64(64, v);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "backing size", v.ToString());
    }

    [Fact]
    public void BitmapLengthMismatch()
    {
        using var h = new HostileImage();
        h.SetI64(80, 11);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "bitmap length 11", "10");
        h.SetI64(80, 9);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "bitmap length 9");
        h.SetI64(80, -1);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "bitmap length -1");
        h.SetI64(80, long.MaxValue);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "bitmap length");
    }

    [Fact]
    public void BackingSizeChangedWithoutBitmapIsRefused()
    {
        using var h = new HostileImage();
        h.SetI64(64, 40_000 + 512 * 8 * 3); // 24 more blocks: 3 more bitmap bytes than recorded
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "bitmap length 10", "13");
    }

    [Fact]
    public void HugeBitmapIsRefusedBeforeAllocating()
    {
        // 64 TiB backing with 512-byte blocks: a consistent 16 GiB bitmap; refused by the memory cap.
        using var h = new HostileImage();
        long backing = 64L << 40;
        h.Mutate(b =>
        {
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(48), backing);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(64), backing);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(80), backing / 512 / 8);
        });
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "bitmap of", "limit");
    }

    [Fact]
    public void BitmapPastEndOfFile()
    {
        using var h = new HostileImage();
        using (var f = new FileStream(h.Image, FileMode.Open)) f.SetLength(8192 + 5);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "past the end of the file");
        using (var f = new FileStream(h.Image, FileMode.Open)) f.SetLength(8192);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "past the end of the file");
    }

    [Fact]
    public void LargeConsistentBitmapPastEndOfFile()
    {
        // A 1 MiB bitmap (backing 4 GiB, block 512) that the 8 KiB file does not hold.
        using var h = new HostileImage();
        long backing = 4L << 30;
        h.Mutate(b =>
        {
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(48), backing);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(64), backing);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(80), backing / 512 / 8);
        });
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "past the end of the file");
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(4096L)] // the single-slot place: the second header copy
    [InlineData(12288L)]
    [InlineData(4095L)]
    [InlineData(-4096L)]
    public void BadBitmapOffset(long v)
    {
        using var h = new HostileImage();
        h.SetI64(72, v);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "bitmap offset");
    }

    [Fact]
    public void BitmapTrailingBitsSet()
    {
        using var h = new HostileImage();
        using (var f = new FileStream(h.Image, FileMode.Open, FileAccess.Write)) { f.Position = 8192 + 9; f.WriteByte(0x80); } // block 79 does not exist
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "past the last block");
    }

    [Theory]
    [InlineData(0, 0L, 4096L)]
    [InlineData(0, 8192L, 0L)]
    [InlineData(2, 0L, 1L)]
    [InlineData(4, -1L, -1L)]
    public void ReservedRegionSet(int region, long off, long len)
    {
        using var h = new HostileImage();
        h.Mutate(b =>
        {
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(128 + 16 * region), off);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(128 + 16 * region + 8), len);
        });
        h.ExpectFailure(FvdErrorKind.InvalidFormat, $"reserved region {region}");
    }

    [Theory]
    [InlineData(512, 16, "backing format")]
    [InlineData(1024, 1024, "backing path")]
    [InlineData(2048, 1024, "data file name")]
    public void StringNotNulTerminated(int off, int len, string what)
    {
        using var h = new HostileImage();
        h.Mutate(b => b.AsSpan(off, len).Fill((byte)'a'));
        h.ExpectFailure(FvdErrorKind.InvalidFormat, what, "NUL-terminated");
    }

    [Theory]
    [InlineData(512, "backing format")]
    [InlineData(1024, "backing path")]
    [InlineData(2048, "data file name")]
    public void StringBytesAfterTerminator(int off, string what)
    {
        using var h = new HostileImage();
        h.Mutate(b => b[off + 14] = (byte)'x');
        h.ExpectFailure(FvdErrorKind.InvalidFormat, what, "after its terminator");
    }

    [Theory]
    [InlineData(512, "backing format", new byte[] { 0xFF })]
    [InlineData(1024, "backing path", new byte[] { (byte)'a', 0xC3 })]            // truncated sequence
    [InlineData(2048, "data file name", new byte[] { 0xC0, 0xAF })]               // overlong '/'
    [InlineData(1024, "backing path", new byte[] { 0xED, 0xA0, 0x80 })]           // UTF-16 surrogate
    public void StringInvalidUtf8(int off, string what, byte[] value)
    {
        using var h = new HostileImage();
        h.SetString(off, 16, value);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, what, "UTF-8");
    }

    [Theory]
    [InlineData("nbd:foo")]
    [InlineData("json:{\"driver\":\"nbd\",\"host\":\"x\"}")]
    [InlineData("file:base.raw")]
    [InlineData("ssh:host")]
    [InlineData(":base.raw")]
    [InlineData("nbd+unix:///export?socket=/tmp/s")]
    [InlineData("gluster+tcp://host/vol/img")]
    public void ProtocolPrefixBackingPath(string p)
    {
        using var h = new HostileImage();
        h.SetString(1024, 1024, Encoding.UTF8.GetBytes(p));
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "protocol prefix");
    }

    [Theory]
    [InlineData("./a:b")]
    [InlineData("dir/a:b")]
    public void ColonAfterSlashIsAPlainPath(string p)
    {
        using var h = new HostileImage();
        Directory.CreateDirectory(h.Dir.File("dir"));
        File.Copy(h.Backing, h.Dir.File(p));
        h.SetString(1024, 1024, Encoding.UTF8.GetBytes(p));
        using var img = FvdImage.Open(h.Image);
    }

    [Theory]
    [InlineData("sub/t.data")]
    [InlineData("/etc/passwd")]
    [InlineData("../t.data")]
    [InlineData("..")]
    [InlineData(".")]
    public void DataFileNameNotPlain(string name)
    {
        using var h = new HostileImage();
        h.SetString(2048, 1024, Encoding.UTF8.GetBytes(name));
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "data file name", "plain file name");
    }

    [Fact]
    public void NoDataFileAndNoInline()
    {
        using var h = new HostileImage();
        h.SetString(2048, 1024, Array.Empty<byte>());
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "no data file name");
    }

    [Fact]
    public void DataOffsetWithoutInline()
    {
        using var h = new HostileImage();
        h.SetI64(88, 8192);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "data offset set without inline");
    }

    [Fact]
    public void InlineWithDataFileName()
    {
        using var h = new HostileImage(inline: true);
        h.SetString(2048, 1024, "x.data"u8.ToArray());
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "inline data and a data file name");
    }

    [Theory]
    [InlineData(8192L)]     // on the bitmap
    [InlineData(4096L)]     // on the second header copy
    [InlineData(0L)]        // on the header
    [InlineData(-8192L)]
    [InlineData(12288L + 512)] // not 4096-aligned
    public void InlineDataOffsetOverlapsOrMisaligned(long off)
    {
        using var h = new HostileImage(inline: true);
        Assert.Equal(12288, h.Header() is var b ? BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(88)) : 0);
        h.SetI64(88, off);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "data offset", "overlaps metadata or is not 4096-aligned");
    }

    [Fact]
    public void InlineDataOffsetOutOfRange()
    {
        using var h = new HostileImage(inline: true);
        h.SetI64(88, long.MaxValue - 4095);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "data offset", "out of range");
    }

    [Fact]
    public void InlineDataTruncatedReadsZerosReadOnlyAndWritableGrows()
    {
        using var h = new HostileImage(inline: true);
        using (var f = new FileStream(h.Image, FileMode.Open)) f.SetLength(12288 + 100);
        // Like a separate data file with a dropped sparse tail: read-only, the missing tail reads as zeros.
        using (var ro = FvdImage.Open(h.Image, new FvdOpenOptions { ReadOnly = true }))
        {
            var tail = new byte[4096];
            ro.Read(65536 - 4096, tail);
            Assert.True(tail.All(b => b == 0));
            Assert.Equal(12288 + 100, new FileInfo(h.Image).Length); // read-only: the file is not changed
        }
        using (var img = FvdImage.Open(h.Image))
        {
            Assert.Equal(12288 + 65536, new FileInfo(h.Image).Length);
            var buf = new byte[65536];
            img.Read(0, buf); // backing content then zeros
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(100)]
    [InlineData(4095)]
    public void TruncatedHeader(int len)
    {
        using var h = new HostileImage();
        using (var f = new FileStream(h.Image, FileMode.Open)) f.SetLength(len);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "too short");
        Assert.Equal(FvdErrorKind.InvalidFormat, Assert.Throws<FvdException>(() => FvdHeader.Parse(new byte[len])).Kind);
    }

    [Fact]
    public void MissingImageAndDirectoryImage()
    {
        using var h = new HostileImage();
        Assert.Equal(FvdErrorKind.NotFound, Assert.Throws<FvdException>(() => FvdImage.Open(h.Dir.File("nope.fvd"))).Kind);
        Assert.Equal(FvdErrorKind.InvalidArgument, Assert.Throws<FvdException>(() => FvdImage.Open(h.Dir.Path)).Kind);
    }

    [Fact]
    public void MissingDataFile()
    {
        using var h = new HostileImage();
        File.Delete(h.Data);
        var e = h.ExpectFailure(FvdErrorKind.NotFound, "data file not found");
        Assert.Equal(h.Data, e.FilePath);
    }

    [Fact]
    public void MissingBacking()
    {
        using var h = new HostileImage();
        File.Delete(h.Backing);
        var e = h.ExpectFailure(FvdErrorKind.NotFound, "backing file not found");
        Assert.Equal(h.Backing, e.FilePath);
        h.ExpectFailure(FvdErrorKind.NotFound, new FvdOpenOptions { ReadOnly = true }, "backing file not found");
        // Tools may open without it; reads of backing blocks then fail with NotFound, local reads work.
        using var img = FvdImage.Open(h.Image, new FvdOpenOptions { AllowMissingBacking = true, ReadOnly = true });
        Assert.Equal(FvdErrorKind.NotFound, Assert.Throws<FvdException>(() => img.Read(0, new byte[512])).Kind);
        img.Read(40_960, new byte[512]); // past the backing: zeros
    }

    [Fact]
    public async Task BackingIsAFifo()
    {
        using var h = new HostileImage();
        File.Delete(h.Backing);
        using (var p = Process.Start("mkfifo", h.Backing)) p.WaitForExit();
        Assert.True(File.Exists(h.Backing) || Path.Exists(h.Backing));
        var t = Task.Run(() => h.ExpectFailure(FvdErrorKind.PermissionDenied, "fifo", "not a regular file"));
        Assert.True(await Task.WhenAny(t, Task.Delay(TimeSpan.FromSeconds(10))) == t, "opening a FIFO backing blocked");
        await t;
    }

    [Fact]
    public void BackingIsADirectory()
    {
        using var h = new HostileImage();
        File.Delete(h.Backing);
        Directory.CreateDirectory(h.Backing);
        h.ExpectFailure(FvdErrorKind.InvalidArgument, "directory");
    }

    [Fact]
    public void BackingIsACharacterDevice()
    {
        using var h = new HostileImage();
        h.SetString(1024, 1024, "/dev/zero"u8.ToArray());
        h.ExpectFailure(FvdErrorKind.PermissionDenied, "not a regular file");
    }

    [Fact]
    public void BackingSmallerThanRecorded()
    {
        using var h = new HostileImage();
        using (var f = new FileStream(h.Backing, FileMode.Open)) f.SetLength(HostileImage.BackingLength - 1);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "smaller than");
        // Larger is fine: only the recorded size is used.
        using (var f = new FileStream(h.Backing, FileMode.Open)) f.SetLength(HostileImage.BackingLength + 4096);
        using var img = FvdImage.Open(h.Image);
    }

    [Fact]
    public void BackingFieldsInconsistent()
    {
        using var h = new HostileImage();
        h.SetString(512, 16, "vmdk"u8.ToArray());
        h.ExpectFailure(FvdErrorKind.UnsupportedFeature, "vmdk", "raw, qcow2 or fvd");
        // The recorded format is used, never probed: a raw file named as qcow2 is no qcow2.
        h.SetString(512, 16, "qcow2"u8.ToArray());
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "not a qcow2 image");
        h.SetString(512, 16, Array.Empty<byte>());
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "no backing format");
        h.SetString(512, 16, "raw"u8.ToArray());
        h.SetString(1024, 1024, Array.Empty<byte>());
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "no backing path");
        using var h2 = new HostileImage();
        h2.Mutate(b => { BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(64), 0); BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(80), 0); });
        h2.ExpectFailure(FvdErrorKind.InvalidFormat, "backing size is 0");
    }

    [Theory]
    [InlineData(96, -2, "start delay")]
    [InlineData(100, 100, "prefetch chunk")]
    [InlineData(100, -512, "prefetch chunk")]
    [InlineData(100, (64 << 20) + 512, "prefetch chunk")]
    [InlineData(104, -1, "throughput")]
    [InlineData(116, int.MinValue, "throughput")]
    [InlineData(120, -1, "throttle")]
    [InlineData(120, 3_600_001, "throttle")]
    [InlineData(124, -1, "copy-on-read limit")]
    [InlineData(124, (1 << 30) + 1, "copy-on-read limit")]
    public void BadPrefetchSettings(int off, int value, string what)
    {
        using var h = new HostileImage();
        h.SetI32(off, value);
        h.ExpectFailure(FvdErrorKind.InvalidFormat, what);
    }

    [Fact]
    public void HugeVirtualSizeFailsWithFvdExceptionWhereTheFileSystemRefusesIt()
    {
        // ext4 refuses files over 16 TiB with EFBIG, which .NET reports as ArgumentOutOfRangeException;
        // growing the data file at open (and creating one) must turn that into an FvdException.
        using var h = new HostileImage();
        h.SetI64(48, 64L << 40);
        try { using var img = FvdImage.Open(h.Image); Assert.Equal(64L << 40, img.Length); }
        catch (FvdException) { }
        using var h2 = new HostileImage(inline: true);
        h2.SetI64(48, 64L << 40);
        try { using var img = FvdImage.Open(h2.Image); }
        catch (FvdException) { }
        try { FvdImage.Create(h.Dir.File("huge.fvd"), new FvdCreateOptions { VirtualSize = 64L << 40, InlineData = true }); }
        catch (FvdException) { }
    }
}

public class HostileFileKindTests
{
    private static async Task ExpectFastFailure(Func<FvdException> open, string what)
    {
        var t = Task.Run(open);
        Assert.True(await Task.WhenAny(t, Task.Delay(TimeSpan.FromSeconds(10))) == t, $"{what}: open blocked");
        await t;
    }

    private static void MkFifo(string path)
    {
        using var p = Process.Start("mkfifo", path);
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task DataFileIsAFifo(bool readOnly)
    {
        using var h = new HostileImage();
        File.Delete(h.Data);
        MkFifo(h.Data);
        await ExpectFastFailure(() => Assert.Throws<FvdException>(() => FvdImage.Open(h.Image, new FvdOpenOptions { ReadOnly = readOnly })), "data FIFO");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ImageIsAFifo(bool readOnly)
    {
        using var h = new HostileImage();
        string p = h.Dir.File("fifo.fvd");
        MkFifo(p);
        await ExpectFastFailure(() => Assert.Throws<FvdException>(() => FvdImage.Open(p, new FvdOpenOptions { ReadOnly = readOnly })), "image FIFO");
    }

    [Fact]
    public void DataFileIsADirectory()
    {
        using var h = new HostileImage();
        File.Delete(h.Data);
        Directory.CreateDirectory(h.Data);
        var e = Assert.Throws<FvdException>(() => FvdImage.Open(h.Image));
        Assert.Contains("data file", e.Message);
    }

    [Fact]
    public void PrefetchFinishedImageNeedsNoBacking()
    {
        using var h = new HostileImage();
        using (var img = FvdImage.Open(h.Image))
        {
            var all = new byte[img.Length];
            img.Read(0, all);
            img.Write(0, all); // copy everything local
            img.SetHeaderFlags(HeaderFlags.PrefetchFinished, 0);
        }
        File.Delete(h.Backing);
        using var again = FvdImage.Open(h.Image, new FvdOpenOptions { ReadOnly = true });
        var got = new byte[HostileImage.BackingLength];
        again.Read(0, got);
        var expect = File.ReadAllBytes(h.Data)[..HostileImage.BackingLength];
        Assert.Equal(expect, got);
    }

}

/// <summary>The two header copies (HeaderSlots.cs) and the header fields that came with them.</summary>
public class HeaderSlotTests
{
    [Fact]
    public void BackingSizeLargerThanVirtualSizeIsRefused()
    {
        // Consistent otherwise: bitmap sized for the larger backing, backing file long enough.
        using var h = new HostileImage();
        using (var f = new FileStream(h.Backing, FileMode.Open)) f.SetLength(70_000);
        long backing = 65536 + 512;
        h.Mutate(b =>
        {
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(64), backing);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(80), FvdHeader.CeilDiv(backing / 512, 8));
        });
        h.ExpectFailure(FvdErrorKind.InvalidFormat, "backing size 66048 exceeds the virtual size 65536");
        h.ExpectFailure(FvdErrorKind.InvalidFormat, new FvdOpenOptions { ReadOnly = true }, "exceeds the virtual size");
    }

    private static readonly FvdOpenOptions ReadOnly = new() { ReadOnly = true };

    [Fact]
    public void NewImagesHaveTwoEqualHeaderCopies()
    {
        using var h = new HostileImage();
        Assert.Equal(2, h.Slots);
        Assert.Equal(h.Header(0), h.Header(1));
        using var img = FvdImage.Open(h.Image, ReadOnly);
        Assert.Equal(8192, img.Header.BitmapOffset);
    }

    [Fact]
    public void BothHeaderCopiesCorruptIsAClearError()
    {
        using var h = new HostileImage();
        h.Mutate(b => b[100] ^= 1, fixCrc: false);
        var e = h.ExpectFailure(FvdErrorKind.InvalidFormat, ReadOnly, "checksum", "header copy 1");
        Assert.DoesNotContain("\n", e.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void OneCorruptCopyOpensWithTheOtherAndCheckRepairsIt(int bad)
    {
        using var h = new HostileImage();
        h.MutateSlot(bad, b => b[100] ^= 1, fixCrc: false);
        using (var img = FvdImage.Open(h.Image, ReadOnly)) Assert.Equal(65536, img.Length);
        var r = ImageChecker.Check(h.Image);
        Assert.Equal(3, r.ExitCode);
        Assert.Contains(r.Messages, m => m.Text.Contains($"header copy {bad}") && m.Text.Contains("checksum"));
        Assert.Equal(1, ImageChecker.Check(h.Image, RepairMode.Leaks).Fixed);
        Assert.Equal(h.Header(0), h.Header(1)); // rewritten from the good copy
        Assert.Equal(0, ImageChecker.Check(h.Image).ExitCode);
    }

    [Fact]
    public void ImageWithADestroyedFirstCopyIsStillRecognizedAndOpens()
    {
        using var h = new HostileImage();
        h.MutateSlot(0, b => Array.Clear(b), fixCrc: false);
        Assert.Equal("fvd", Converter.DetectFormat(h.Image)); // fvdmount and convert must not take it for raw
        Assert.Equal(3, ImageChecker.Check(h.Image).ExitCode);
        using (var img = FvdImage.Open(h.Image)) Assert.Equal(65536, img.Length);
        // The writable open's header updates went to the damaged slot, so it is whole again.
        Assert.Equal(0, ImageChecker.Check(h.Image).ExitCode);
    }

    [Fact]
    public void NewerGenerationWinsAndATieUsesCopy0()
    {
        using var h = new HostileImage();
        // Same generation, different content: copy 0 is used; check reports it and -r makes them equal.
        h.MutateSlot(1, b => BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(96), 99));
        using (var img = FvdImage.Open(h.Image, ReadOnly)) Assert.NotEqual(99, img.Header.Prefetch.StartDelaySeconds);
        var r = ImageChecker.Check(h.Image);
        Assert.Contains(r.Messages, m => m.Severity == CheckSeverity.Repairable && m.Text.Contains("both have generation 0"));
        // A larger generation in copy 1 makes it current.
        h.MutateSlot(1, b => BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(208), 7));
        using (var img = FvdImage.Open(h.Image, ReadOnly))
        {
            Assert.Equal(99, img.Header.Prefetch.StartDelaySeconds);
            Assert.Equal(7, img.Header.Generation);
        }
        Assert.Equal(0, ImageChecker.Check(h.Image).ExitCode); // an older second copy is the normal state
    }

    [Fact]
    public void WritesAlternateSlotsWithIncreasingGeneration()
    {
        using var h = new HostileImage();
        using (var img = FvdImage.Open(h.Image)) // clears the clean flag: copy 1, generation 1
        {
            Assert.Equal(1, img.Header.Generation);
            Assert.Equal(1, Copy(1).Generation);
            Assert.Equal(0, Copy(0).Generation);
        } // sets it again: copy 0, generation 2
        Assert.Equal(2, Copy(0).Generation);
        Assert.Equal(HeaderFlags.CleanShutdown, Copy(0).Flags & HeaderFlags.CleanShutdown);
        Assert.Equal(HeaderFlags.None, Copy(1).Flags & HeaderFlags.CleanShutdown);
        // Read without a lock conflict while the image is open.
        FvdHeader Copy(int slot) => FvdHeader.Parse(DurabilityTests.ReadShared(h.Image).AsSpan((int)HeaderSlots.Offset(slot), FvdHeader.Size));
    }

    [Theory]
    [InlineData(72, 1L << 40, "bitmap offset", "bitmap offset")]  // bitmap far past the file
    [InlineData(72, 4096L, "bitmap offset", "bitmap offset")]      // bitmap over the second copy
    [InlineData(24, 0L, "single-slot", "bitmap offset 8192 is not 4096")] // does not declare two slots
    [InlineData(208, -1L, "generation", "generation")]
    [InlineData(208, long.MaxValue, "generation", "generation")] // would wrap on the next update
    public void NonsenseInCopy1IsIgnoredEvenWhenNewer(int off, long value, string what, string whatInBoth)
    {
        using var h = new HostileImage();
        h.MutateSlot(1, b =>
        {
            if (off != 208) BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(208), 5);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(off), value);
        });
        using (var img = FvdImage.Open(h.Image, ReadOnly)) Assert.Equal(8192, img.Header.BitmapOffset);
        var r = ImageChecker.Check(h.Image);
        Assert.Contains(r.Messages, m => m.Text.Contains("header copy 1") && m.Text.Contains(what));
        // The same nonsense in both copies is refused.
        h.MutateSlot(0, b => BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(off), value));
        h.ExpectFailure(FvdErrorKind.InvalidFormat, ReadOnly, whatInBoth);
    }

    [Fact]
    public void UnknownFeatureInEitherCopyIsRefused()
    {
        // An older copy must not hide a newer format.
        using var h = new HostileImage();
        h.MutateSlot(1, b => b[24 + 7] |= 0x40);
        h.ExpectFailure(FvdErrorKind.UnsupportedFeature, ReadOnly, "incompatible");
    }

    [Fact]
    public void SingleSlotHeaderWithGenerationIsRefused()
    {
        using var h = new HostileImage();
        h.Mutate(b => b[24] &= unchecked((byte)~(int)IncompatibleFeatures.TwoHeaderSlots));
        h.ExpectFailure(FvdErrorKind.InvalidFormat, ReadOnly, "bitmap offset 8192 is not 4096");
        h.Mutate(b =>
        {
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(72), 4096);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(208), 3);
        });
        h.ExpectFailure(FvdErrorKind.InvalidFormat, ReadOnly, "generation 3", "single-slot");
    }
}
