using Fvd.Core.Format;
using Fvd.Core.Image;
using Fvd.Core.Image.Mapping;
using Fvd.Core.Io;

namespace Fvd.Core.Tests;

/// <summary>
/// The metadata file's owner (src/Fvd.Core/Image/MetadataFile.cs): its regions for both header layouts, and
/// the flush order in one place.
/// </summary>
public sealed class MetadataFileTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static FvdHeader Header(bool twoSlots, long bitmapLength = 5000, bool inline = false)
    {
        long area = twoSlots ? 2 * FvdHeader.Size : FvdHeader.Size;
        return new FvdHeader
        {
            Incompatible = (twoSlots ? IncompatibleFeatures.TwoHeaderSlots : 0) | (inline ? IncompatibleFeatures.InlineData : 0),
            VirtualSize = 1L << 30,
            BlockSize = 4096,
            BackingSize = bitmapLength * 8 * 4096,
            BitmapOffset = bitmapLength > 0 ? area : 0,
            BitmapLength = bitmapLength,
            BackingFormat = bitmapLength > 0 ? "raw" : "",
            BackingPath = bitmapLength > 0 ? "base.raw" : "",
            DataFile = inline ? "" : "t.data",
            DataOffset = inline ? MetadataRegions.EndOfBitmap(area, bitmapLength) : 0,
        };
    }

    [Fact]
    public void OneSlotLayoutHasTheBitmapAtTheSecondPage()
    {
        var r = MetadataRegions.Of(Header(twoSlots: false));
        Assert.Equal(1, r.Slots);
        Assert.Equal(4096, r.HeaderArea);
        Assert.Equal(0, r.SlotOffset(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => r.SlotOffset(1));
        Assert.Equal((4096L, 5000L), (r.BitmapOffset, r.BitmapLength));
        Assert.Equal(12288, r.BitmapEnd); // 4096 + 5000 rounded up to a page
        Assert.Equal(r.BitmapEnd, r.FreeStart);
        Assert.Equal((0L, 0L), r.InlineData);
        Assert.Equal((0L, 0L), r.Profile);
    }

    [Fact]
    public void TwoSlotLayoutHasTheBitmapAfterBothCopies()
    {
        var r = MetadataRegions.Of(Header(twoSlots: true));
        Assert.Equal(2, r.Slots);
        Assert.Equal(8192, r.HeaderArea);
        Assert.Equal(4096, r.SlotOffset(1));
        Assert.Equal(8192, r.BitmapOffset);
        Assert.Equal(16384, r.BitmapEnd);
        Assert.Equal(16384, r.FreeStart);
    }

    [Theory]
    [InlineData(false, 4096)]
    [InlineData(true, 8192)]
    public void WithoutABitmapTheHeaderAreaIsAll(bool twoSlots, long area)
    {
        var h = Header(twoSlots, bitmapLength: 0);
        h.Validate(area);
        var r = MetadataRegions.Of(h);
        Assert.Equal(area, r.BitmapEnd);
        Assert.Equal(area, r.FreeStart);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void InlineDataComesBeforeAnyProfile(bool twoSlots)
    {
        var h = Header(twoSlots, inline: true);
        var r = MetadataRegions.Of(h);
        Assert.Equal((r.BitmapEnd, 1L << 30), r.InlineData);
        Assert.Equal(r.BitmapEnd + (1L << 30), r.FreeStart);
        h.Validate(r.FreeStart);
    }

    [Fact]
    public void CreateWritesExactlyTheRegionsAndTheProfileGoesToFreeStart()
    {
        File.WriteAllBytes(_dir.File("base.raw"), new byte[300 * 4096]);
        string img = _dir.File("t.fvd");
        FvdImage.Create(img, new FvdCreateOptions { VirtualSize = 1 << 22, BackingFile = "base.raw", BlockSize = 4096 });
        long free;
        using (var image = FvdImage.Open(img))
        {
            var r = MetadataRegions.Of(image.Header);
            Assert.Equal(r.BitmapEnd, new FileInfo(img).Length);
            free = r.FreeStart;
            image.WriteProfile([(4096, 8192)]);
            Assert.Equal(free, MetadataRegions.Of(image.Header).Profile.Offset);
        }
        using var again = FvdImage.Open(img);
        Assert.Equal(free, MetadataRegions.Of(again.Header).Profile.Offset);
        Assert.Equal([(4096L, 8192L)], again.PrefetchProfileEntries);
    }

    /// <summary>A metadata file of a two-slot header over a bitmap, its map, and recording devices for both files.</summary>
    private static (MetadataFile File, IBlockMap Map, RecordingDevice Meta, RecordingDevice Data) Open()
    {
        var h = Header(twoSlots: true);
        var r = MetadataRegions.Of(h);
        var metaBytes = new byte[r.BitmapEnd];
        HeaderSlots.Initial(h).CopyTo(metaBytes, 0);
        var meta = new RecordingDevice(new MemoryDevice(metaBytes));
        var data = new RecordingDevice(new MemoryDevice(1 << 20));
        var choice = HeaderSlots.Choose(metaBytes, metaBytes.Length);
        return (new MetadataFile(meta, choice, "t.fvd"), LinearMap.Load(meta, choice.Header, "t.fvd"), meta, data);
    }

    [Fact]
    public void FlushSyncsDataBeforeWritingTheMap()
    {
        var (file, map, meta, data) = Open();
        data.Write(0, new byte[4096]);
        file.MarkDataWritten();
        map.MarkLocal(0, 1);
        meta.Clear();
        data.Clear();
        var order = new List<string>();
        data.Before = op => order.Add("data " + op.Op);
        meta.Before = op => order.Add("meta " + op.Op);
        file.Flush(data, map);
        Assert.Equal(["data Flush", "meta Write", "meta Flush"], order);

        order.Clear();
        file.Flush(data, map); // nothing written, nothing dirty
        Assert.Empty(order);
    }

    [Fact]
    public void AFailedDataSyncIsFinalAndWritesNoMetadata()
    {
        var (file, map, meta, data) = Open();
        file.MarkDataWritten();
        map.MarkLocal(0, 1);
        data.Before = op =>
        {
            if (op.Op == RecordedOp.Flush) throw new IOException("EIO");
        };
        Assert.Equal(FvdErrorKind.Io, Assert.Throws<FvdException>(() => file.Flush(data, map)).Kind);
        Assert.DoesNotContain(meta.Operations, o => o.Op == RecordedOp.Write && o.Offset >= MetadataRegions.Of(file.Header).BitmapOffset);
        data.Before = null;
        data.Clear();
        Assert.Equal(FvdErrorKind.Io, Assert.Throws<FvdException>(() => file.Flush(data, map)).Kind);
        Assert.Empty(data.Operations);
        Assert.Throws<FvdException>(() => file.UpdateHeader(h => h with { Flags = h.Flags | HeaderFlags.CleanShutdown }));
        Assert.True((file.Header.Incompatible & IncompatibleFeatures.Corrupt) != 0, "the header is not marked corrupt");
    }
}
