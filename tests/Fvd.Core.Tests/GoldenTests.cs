using System.Buffers.Binary;
using System.Text;
using Fvd.Core.Format;

namespace Fvd.Core.Tests;

/// <summary>Byte-exact golden tests: known values serialize to known bytes at the documented offsets, and back.</summary>
public class GoldenTests
{
    /// <summary>Bitwise CRC-32C (reflected polynomial 0x82F63B78), independent of the hardware path.</summary>
    internal static uint ReferenceCrc32C(ReadOnlySpan<byte> data)
    {
        uint crc = ~0u;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        }
        return ~crc;
    }

    [Fact]
    public void Crc32CKnownVectors()
    {
        Assert.Equal(0xE3069283u, Crc32C.Compute("123456789"u8));
        Assert.Equal(0u, Crc32C.Compute(ReadOnlySpan<byte>.Empty));
        // RFC 3720 (iSCSI) appendix B.4 vectors.
        Assert.Equal(0x8A9136AAu, Crc32C.Compute(new byte[32]));
        Assert.Equal(0x62A8AB43u, Crc32C.Compute(Enumerable.Repeat((byte)0xFF, 32).ToArray()));
        Assert.Equal(0x46DD794Eu, Crc32C.Compute(Enumerable.Range(0, 32).Select(i => (byte)i).ToArray()));
        Assert.Equal(0x113FDB5Cu, Crc32C.Compute(Enumerable.Range(0, 32).Select(i => (byte)(31 - i)).ToArray()));
    }

    [Fact]
    public void Crc32CMatchesBitwiseReferenceForAllLengthsAndAlignments()
    {
        var rng = new Random(1234);
        var buf = new byte[300];
        rng.NextBytes(buf);
        for (int start = 0; start < 9; start++)
            for (int len = 0; len + start <= buf.Length; len += 1 + len / 16)
                Assert.Equal(ReferenceCrc32C(buf.AsSpan(start, len)), Crc32C.Compute(buf.AsSpan(start, len)));
    }

    private static FvdHeader KnownHeader() => new()
    {
        Flags = HeaderFlags.CleanShutdown | HeaderFlags.CopyOnRead,
        Incompatible = IncompatibleFeatures.None,
        VirtualSize = 0x0000_0001_2345_6000, // 4,886,716,416 bytes
        BlockSize = 65536,
        BackingSize = 0x0000_0000_8000_0200, // 2 GiB + 512
        BitmapOffset = 4096,
        BitmapLength = 4097, // ceil(ceil((2 GiB + 512) / 64 KiB) / 8) = ceil(32769 / 8)
        DataOffset = 0,
        Prefetch = new PrefetchSettings
        {
            StartDelaySeconds = 7, ChunkBytes = 1 << 20, MinReadKiBps = 100, MaxReadKiBps = 200,
            MinWriteKiBps = 300, MaxWriteKiBps = 400, ThrottleMs = 500, MaxOutstandingCorBytes = 600,
        },
        BackingFormat = "raw",
        BackingPath = "base/ubuntü.img",
        DataFile = "vm.data",
    };

    [Fact]
    public void HeaderSerializesToDocumentedOffsets()
    {
        var h = KnownHeader();
        h.Validate(4096 + 8192);
        byte[] b = h.ToBytes();
        Assert.Equal(4096, b.Length);
        Assert.Equal("FVDIMG\r\n"u8.ToArray(), b[0..8]);
        Assert.Equal(new byte[] { 0x46, 0x56, 0x44, 0x49, 0x4D, 0x47, 0x0D, 0x0A }, b[0..8]);
        Assert.Equal(new byte[] { 1, 0, 0, 0 }, b[8..12]);                 // version
        Assert.Equal(new byte[] { 0x00, 0x10, 0, 0 }, b[12..16]);          // header size 4096
        Assert.Equal(new byte[] { 0x05, 0, 0, 0 }, b[20..24]);             // flags: clean | copy-on-read
        Assert.All(b[24..48], x => Assert.Equal(0, x));                     // feature words
        Assert.Equal(new byte[] { 0x00, 0x60, 0x45, 0x23, 0x01, 0, 0, 0 }, b[48..56]); // virtual size
        Assert.Equal(new byte[] { 0x00, 0x00, 0x01, 0x00 }, b[56..60]);    // block size 65536
        Assert.All(b[60..64], x => Assert.Equal(0, x));                     // reserved
        Assert.Equal(new byte[] { 0x00, 0x02, 0x00, 0x80, 0, 0, 0, 0 }, b[64..72]); // backing size
        Assert.Equal(new byte[] { 0x00, 0x10, 0, 0, 0, 0, 0, 0 }, b[72..80]);       // bitmap offset
        Assert.Equal(new byte[] { 0x01, 0x10, 0, 0, 0, 0, 0, 0 }, b[80..88]);       // bitmap length 4097
        Assert.All(b[88..96], x => Assert.Equal(0, x));                     // data offset
        Assert.Equal(7, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(96)));
        Assert.Equal(1 << 20, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(100)));
        Assert.Equal(100, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(104)));
        Assert.Equal(200, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(108)));
        Assert.Equal(300, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(112)));
        Assert.Equal(400, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(116)));
        Assert.Equal(500, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(120)));
        Assert.Equal(600, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(124)));
        Assert.All(b[128..512], x => Assert.Equal(0, x));                   // regions + reserved
        Assert.Equal("raw\0\0\0\0\0\0\0\0\0\0\0\0\0"u8.ToArray(), b[512..528]);
        Assert.All(b[528..1024], x => Assert.Equal(0, x));
        byte[] bp = Encoding.UTF8.GetBytes("base/ubuntü.img");
        Assert.Equal(16, bp.Length); // ü is two bytes
        Assert.Equal(bp, b[1024..1040]);
        Assert.All(b[1040..2048], x => Assert.Equal(0, x));
        Assert.Equal("vm.data"u8.ToArray(), b[2048..2055]);
        Assert.All(b[2055..4096], x => Assert.Equal(0, x));

        // CRC: CRC-32C of the 4096 bytes with the CRC field zero, little-endian at 16.
        var z = (byte[])b.Clone();
        z[16] = z[17] = z[18] = z[19] = 0;
        uint crc = ReferenceCrc32C(z);
        Assert.Equal(crc, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(16)));
    }

    [Fact]
    public void HeaderGoldenCrcIsStable()
    {
        // Pins the whole serialization: any change to any byte changes this value.
        byte[] b = KnownHeader().ToBytes();
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(16));
        var z = (byte[])b.Clone();
        z[16] = z[17] = z[18] = z[19] = 0;
        Assert.Equal(ReferenceCrc32C(z), crc);
        Assert.Equal(GoldenCrc, crc);
    }

    // Computed once from the documented layout of KnownHeader (see HeaderSerializesToDocumentedOffsets).
    private const uint GoldenCrc = 1598234822;

    [Fact]
    public void HeaderRoundTrips()
    {
        var h = KnownHeader();
        var back = FvdHeader.Parse(h.ToBytes());
        Assert.Equal(h.Version, back.Version);
        Assert.Equal(h.Flags, back.Flags);
        Assert.Equal(h.Incompatible, back.Incompatible);
        Assert.Equal(h.VirtualSize, back.VirtualSize);
        Assert.Equal(h.BlockSize, back.BlockSize);
        Assert.Equal(h.BackingSize, back.BackingSize);
        Assert.Equal(h.BitmapOffset, back.BitmapOffset);
        Assert.Equal(h.BitmapLength, back.BitmapLength);
        Assert.Equal(h.DataOffset, back.DataOffset);
        Assert.Equal(h.Prefetch, back.Prefetch);
        Assert.Equal(h.BackingFormat, back.BackingFormat);
        Assert.Equal(h.BackingPath, back.BackingPath);
        Assert.Equal(h.DataFile, back.DataFile);
        Assert.Equal(h.ReservedRegions, back.ReservedRegions);
        Assert.Equal(h.ToBytes(), back.ToBytes());
        back.Validate(4096 + 8192);
    }

    [Fact]
    public void TwoSlotHeaderGoldenBytes()
    {
        var h = KnownHeader() with { Incompatible = IncompatibleFeatures.TwoHeaderSlots, BitmapOffset = 8192, Generation = 0x0102030405060708 };
        h.Validate(8192 + 8192);
        byte[] b = h.ToBytes();
        Assert.Equal(new byte[] { 0x20, 0, 0, 0, 0, 0, 0, 0 }, b[24..32]);          // incompatible: two header slots
        Assert.Equal(new byte[] { 0x00, 0x20, 0, 0, 0, 0, 0, 0 }, b[72..80]);       // bitmap offset 8192
        Assert.Equal(new byte[] { 8, 7, 6, 5, 4, 3, 2, 1 }, b[208..216]);           // generation
        Assert.All(b[216..512], x => Assert.Equal(0, x));
        var z = (byte[])b.Clone();
        z[16] = z[17] = z[18] = z[19] = 0;
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(16));
        Assert.Equal(ReferenceCrc32C(z), crc);
        Assert.Equal(GoldenTwoSlotCrc, crc);
        Assert.Equal(h, FvdHeader.Parse(b) with { ReservedRegions = h.ReservedRegions, Prefetch = h.Prefetch });
        // A new image's header area: the same copy in both slots.
        var area = HeaderSlots.Initial(h);
        Assert.Equal(8192, area.Length);
        Assert.Equal(b, area[..4096]);
        Assert.Equal(b, area[4096..]);
    }

    // Computed once from the documented layout (TwoSlotHeaderGoldenBytes).
    private const uint GoldenTwoSlotCrc = 1495509703;

    [Fact]
    public void SingleSlotLayoutIsReadFromSlot0Only()
    {
        // An image made before two header copies: header at 0, bitmap at 4096 (whatever its bytes).
        var h = KnownHeader();
        var file = new byte[4096 + 8192];
        h.WriteTo(file);
        new Random(3).NextBytes(file.AsSpan(4096));
        var c = HeaderSlots.Choose(file, file.Length);
        Assert.Equal(0, c.Slot);
        Assert.Null(c.OtherProblem);
        Assert.Equal(h.ToBytes(), c.Header.ToBytes());
        // Its updates stay in place, without a generation.
        var next = h with { Flags = HeaderFlags.None };
        Assert.Equal((next, 0), HeaderSlots.Prepare(h, 0, next));
        // Even a valid-looking header at 4096 is not a second copy of a single-slot image.
        var two = h with { Incompatible = IncompatibleFeatures.TwoHeaderSlots, BitmapOffset = 8192, Generation = 9 };
        two.WriteTo(file.AsSpan(4096));
        Assert.Equal(0, HeaderSlots.Choose(file, file.Length).Slot);
    }

    [Fact]
    public void InlineHeaderRoundTrips()
    {
        var h = new FvdHeader
        {
            Flags = HeaderFlags.PrefetchFinished,
            Incompatible = IncompatibleFeatures.InlineData,
            VirtualSize = 1 << 20, BlockSize = 512, BackingSize = 1000, BitmapOffset = 4096, BitmapLength = 1,
            DataOffset = 8192, BackingFormat = "raw", BackingPath = "/abs/base.raw", DataFile = "",
        };
        byte[] b = h.ToBytes();
        Assert.Equal(new byte[] { 0x01, 0, 0, 0, 0, 0, 0, 0 }, b[24..32]);
        Assert.Equal(new byte[] { 0x02, 0, 0, 0 }, b[20..24]);
        Assert.Equal(new byte[] { 0x00, 0x20, 0, 0, 0, 0, 0, 0 }, b[88..96]);
        Assert.All(b[2048..3072], x => Assert.Equal(0, x));
        var back = FvdHeader.Parse(b);
        back.Validate(8192 + (1 << 20));
        Assert.Equal(b, back.ToBytes());
        Assert.True(back.InlineData);
        Assert.Equal(2, back.BitmapBlocks);
    }

    [Fact]
    public void OverlongStringIsRefusedOnWrite()
    {
        var h = KnownHeader() with { BackingPath = new string('a', 1024) };
        var e = Assert.Throws<FvdException>(() => h.ToBytes());
        Assert.Equal(FvdErrorKind.InvalidArgument, e.Kind);
        Assert.Contains("backing path", e.Message);
        // 1023 bytes is the maximum and fits.
        var ok = FvdHeader.Parse((KnownHeader() with { BackingPath = new string('a', 1023) }).ToBytes());
        Assert.Equal(1023, ok.BackingPath.Length);
        Assert.Throws<FvdException>(() => (KnownHeader() with { BackingFormat = "0123456789abcdef" }).ToBytes());
    }

    [Fact]
    public void PrefetchSettingsGoldenBytes()
    {
        var p = new PrefetchSettings
        {
            StartDelaySeconds = -1, ChunkBytes = 0x01020304, MinReadKiBps = 0x05060708, MaxReadKiBps = 0,
            MinWriteKiBps = 0x7FFFFFFF, MaxWriteKiBps = 1, ThrottleMs = 0x10, MaxOutstandingCorBytes = 0x2000,
        };
        var b = new byte[PrefetchSettings.Size];
        p.WriteTo(b);
        Assert.Equal(new byte[]
        {
            0xFF, 0xFF, 0xFF, 0xFF, 0x04, 0x03, 0x02, 0x01, 0x08, 0x07, 0x06, 0x05, 0, 0, 0, 0,
            0xFF, 0xFF, 0xFF, 0x7F, 1, 0, 0, 0, 0x10, 0, 0, 0, 0x00, 0x20, 0, 0,
        }, b);
        Assert.Equal(p, PrefetchSettings.Read(b));

        var d = new byte[PrefetchSettings.Size];
        PrefetchSettings.Default.WriteTo(d);
        Assert.Equal(-1, BinaryPrimitives.ReadInt32LittleEndian(d.AsSpan(0)));
        Assert.Equal(5120, BinaryPrimitives.ReadInt32LittleEndian(d.AsSpan(8)));
        Assert.Equal(30_000, BinaryPrimitives.ReadInt32LittleEndian(d.AsSpan(24)));
        Assert.Equal(2_000_000, BinaryPrimitives.ReadInt32LittleEndian(d.AsSpan(28)));
        Assert.Equal(PrefetchSettings.Default, PrefetchSettings.Read(d));
        PrefetchSettings.Default.Validate(512, null);
    }

    [Fact]
    public void BitmapIsLsbFirst()
    {
        var bm = new Bitmap(20);
        Assert.Equal(3, bm.ByteLength);
        bm.SetRange(0, 1);
        bm.SetRange(9, 1);
        bm.SetRange(15, 2); // crosses a byte boundary: bit 7 of byte 1, bit 0 of byte 2
        bm.SetRange(19, 1); // last block: bit 3 of byte 2
        Assert.Equal(new byte[] { 0x01, 0x82, 0x09 }, bm.ToBytes());
        Assert.True(bm.Get(0) && bm.Get(9) && bm.Get(15) && bm.Get(16) && bm.Get(19));
        Assert.False(bm.Get(1) || bm.Get(8) || bm.Get(14) || bm.Get(17) || bm.Get(18));
        Assert.Equal(5, bm.CountSet());

        var back = Bitmap.FromBytes(20, new byte[] { 0x01, 0x82, 0x09 });
        for (int i = 0; i < 20; i++) Assert.Equal(bm.Get(i), back.Get(i));
        Assert.Equal(bm.ToBytes(), back.ToBytes());
    }

    [Fact]
    public void BitmapWordAndPageBoundaries()
    {
        var bm = new Bitmap(4096 * 8 + 70); // two pages, last word partial
        bm.SetRange(60, 10);                 // spans word 0 and word 1
        bm.SetRange(4096 * 8 + 69, 1);       // last block, on page 1
        var b = bm.ToBytes();
        Assert.Equal(4096 + 9, b.Length);
        Assert.Equal(0xF0, b[7]);            // blocks 60..63
        Assert.Equal(0x3F, b[8]);            // blocks 64..69
        Assert.Equal(0x20, b[4096 + 8]);     // block 32837 = byte 4104, bit 5
        Assert.Equal(11, bm.CountSet());
        Assert.Equal(new List<int> { 0, 1 }, bm.TakeDirtyPages());
        Assert.Empty(bm.TakeDirtyPages());
        bm.SetRange(61, 1);                  // already set: no page dirtied
        Assert.Empty(bm.TakeDirtyPages());
        Assert.Equal(60, bm.NextWithValue(0, bm.Blocks, true));
        Assert.Equal(70, bm.NextWithValue(60, bm.Blocks, false));
        Assert.Equal(4096 * 8 + 69, bm.NextWithValue(70, bm.Blocks, true));
        Assert.False(bm.AllSet);
        var page = new byte[Bitmap.PageBytes];
        Assert.Equal(9, bm.CopyPage(1, page));
        Assert.Equal(0x20, page[8]);
        Assert.All(page[9..], x => Assert.Equal(0, x));
    }

    [Fact]
    public void BitmapTrailingBitsMustBeZero()
    {
        // 12 blocks: byte 1 has 4 valid bits (0..3); bit 4 is past the last block.
        var ok = Bitmap.FromBytes(12, new byte[] { 0xFF, 0x0F });
        Assert.True(ok.AllSet);
        var e = Assert.Throws<FvdException>(() => Bitmap.FromBytes(12, new byte[] { 0xFF, 0x1F }));
        Assert.Equal(FvdErrorKind.InvalidFormat, e.Kind);
        Assert.Contains("past the last block", e.Message);
        var e2 = Assert.Throws<FvdException>(() => Bitmap.FromBytes(12, new byte[] { 0xFF }));
        Assert.Equal(FvdErrorKind.InvalidFormat, e2.Kind);
        // Trailing bits in a later byte of the same 64-bit word (blocks = 9, bytes = 2, word has 6 more bytes).
        Assert.Throws<FvdException>(() => Bitmap.FromBytes(9, new byte[] { 0x00, 0x02 }));
        Assert.True(Bitmap.FromBytes(64, Enumerable.Repeat((byte)0xFF, 8).ToArray()).AllSet);
        Assert.Equal(0, new Bitmap(0).ByteLength);
        Assert.True(new Bitmap(0).AllSet);
    }
}
