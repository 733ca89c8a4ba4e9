using Fvd.Core.Format;
using Fvd.Core.Image.Mapping;
using Fvd.Core.Io;

namespace Fvd.Core.Tests;

/// <summary>
/// The contract every block map keeps (src/Fvd.Core/Image/Mapping/IBlockMap.cs). Each layout inherits this
/// class and says how to make a fresh map (every block still in the backing) over a metadata device, and how
/// to load a map back from that device. The map covers MapBlocks blocks; the disk is longer.
/// </summary>
public abstract class BlockMapContract
{
    protected const int Bs = 4096;
    protected const long MapBlocks = 200; // 3 bitmap words and a bit, so runs cross word edges
    protected const long BackingSize = MapBlocks * Bs - 100; // the last block reaches past the backing's end
    protected const long DiskSize = 300 * Bs;

    private protected abstract IBlockMap Create(MemoryDevice meta);
    private protected abstract IBlockMap Load(MemoryDevice meta);
    protected abstract MemoryDevice NewMetadata();

    private IBlockMap Fresh() => Create(NewMetadata());

    /// <summary>Writes a map's dirty metadata as a flush would.</summary>
    private static void Persist(IBlockMap map, MemoryDevice meta)
    {
        foreach (var (off, bytes, len) in map.TakeDirty().Writes) meta.Write(off, bytes.AsSpan(0, len));
    }

    [Fact]
    public void FreshMapHasEveryMappedBlockInTheBacking()
    {
        var map = Fresh();
        Assert.Equal(MapBlocks, map.Blocks);
        Assert.Equal(MapBlocks * Bs, map.MappedEnd);
        Assert.Equal(Placement.Backing, map.Lookup(0, DiskSize, out long runEnd, out _));
        Assert.Equal(map.MappedEnd, runEnd);
        Assert.Equal(0, map.CountLocal());
        Assert.False(map.AllBlocksLocal());
        Assert.Equal(0, map.NextInBacking(0, MapBlocks));
        Assert.Equal(MapBlocks, map.NextLocal(0, MapBlocks));
        Assert.Empty(map.TakeDirty().Writes);
    }

    [Fact]
    public void PastTheMapEverythingIsLocalAtTheOffsetPrepareWriteGives()
    {
        var map = Fresh();
        long pos = map.MappedEnd + 3 * Bs + 17;
        long at = map.PrepareWrite(pos, Bs, out long n);
        Assert.True(n > 0 && n <= Bs);
        Assert.Equal(Placement.Local, map.Lookup(pos, DiskSize, out long runEnd, out long data));
        Assert.Equal(at, data);
        Assert.True(runEnd > pos && runEnd <= DiskSize);
        Assert.True(map.IsLocal(MapBlocks + 5));
    }

    [Fact]
    public void MarkLocalMakesAMiddleRunLocalAtItsWriteOffset()
    {
        var map = Fresh();
        long at = map.PrepareWrite(10 * Bs, 5 * Bs, out long n);
        Assert.Equal(5 * Bs, n);
        map.MarkLocal(10, 5);

        Assert.Equal(Placement.Backing, map.Lookup(0, DiskSize, out long end0, out _));
        Assert.Equal(10 * Bs, end0);
        Assert.Equal(Placement.Local, map.Lookup(10 * Bs, DiskSize, out long end1, out long d1));
        Assert.Equal(15 * Bs, end1);
        Assert.Equal(at, d1);
        // A lookup inside the run: the data offset moves with it; the run ends where asked.
        Assert.Equal(Placement.Local, map.Lookup(12 * Bs + 100, 13 * Bs, out long end2, out long d2));
        Assert.Equal(13 * Bs, end2);
        Assert.Equal(at + 2 * Bs + 100, d2);
        Assert.Equal(Placement.Backing, map.Lookup(15 * Bs, DiskSize, out long end3, out _));
        Assert.Equal(map.MappedEnd, end3);

        Assert.True(map.IsLocal(10) && map.IsLocal(14));
        Assert.False(map.IsLocal(9) || map.IsLocal(15));
        Assert.Equal(10, map.NextLocal(0, MapBlocks));
        Assert.Equal(15, map.NextInBacking(10, MapBlocks));
        Assert.Equal(12, map.NextInBacking(12, 12)); // an empty range: its limit
        Assert.Equal(5, map.CountLocal());
    }

    [Fact]
    public void ALocalRunReachingTheMapsEndContinuesPastIt()
    {
        var map = Fresh();
        map.PrepareWrite((MapBlocks - 2) * Bs, 2 * Bs, out _);
        map.MarkLocal(MapBlocks - 2, 5); // clipped to the map
        Assert.Equal(Placement.Local, map.Lookup((MapBlocks - 2) * Bs, DiskSize, out long runEnd, out _));
        Assert.Equal(DiskSize, runEnd);
        Assert.Equal(2, map.CountLocal());
    }

    [Fact]
    public void TakeDirtyHandsOverChangesOnceAndTheyLoadBack()
    {
        var meta = NewMetadata();
        var map = Create(meta);
        map.MarkLocal(3, 1);
        map.MarkLocal(64, 70);
        var dirty = map.TakeDirty();
        Assert.NotEmpty(dirty.Writes);
        Assert.Empty(map.TakeDirty().Writes);
        foreach (var (off, bytes, len) in dirty.Writes) meta.Write(off, bytes.AsSpan(0, len));

        var again = Load(meta);
        for (long b = 0; b < MapBlocks; b++) Assert.Equal(map.IsLocal(b), again.IsLocal(b));
        Assert.Equal(71, again.CountLocal());
    }

    [Fact]
    public void RestoreMakesAFailedWriteDirtyAgain()
    {
        var meta = NewMetadata();
        var map = Create(meta);
        map.MarkLocal(7, 2);
        map.TakeDirty().Restore(); // as when writing the metadata failed
        Persist(map, meta);
        var again = Load(meta);
        Assert.True(again.IsLocal(7) && again.IsLocal(8));
        Assert.False(again.IsLocal(6));
    }

    [Fact]
    public void EveryBlockLocalAndFinished()
    {
        var map = Fresh();
        map.MarkLocal(0, MapBlocks - 1);
        Assert.False(map.AllBlocksLocal());
        map.MarkLocal(MapBlocks - 1, 1);
        Assert.True(map.AllBlocksLocal());
        Assert.False(map.Finished);
        map.MarkFinished();
        Assert.True(map.Finished);
        Assert.Equal(MapBlocks, map.CountLocal());
        Assert.Equal(MapBlocks, map.NextInBacking(0, MapBlocks));
        Assert.Equal(Placement.Local, map.Lookup(0, DiskSize, out long runEnd, out _));
        Assert.Equal(DiskSize, runEnd);
    }

    [Fact]
    public void DataWrittenButNotMarkedLocalIsUnreferenced()
    {
        var map = Fresh();
        long at = map.PrepareWrite(20 * Bs, Bs, out _);
        var (start, end) = map.NextUnreferenced(at, at + Bs);
        Assert.True(start <= at && end >= at + Bs, $"[{start}, {end}) does not hold [{at}, {at + Bs})");

        map.MarkLocal(20, 1);
        (start, end) = map.NextUnreferenced(at, at + Bs);
        Assert.True(start >= end, $"[{start}, {end}) is still unreferenced after MarkLocal");
        Assert.True(map.UnreferencedLimit >= at + Bs);
    }

    [Fact]
    public void LookupAndPrepareWriteAllocateNothing()
    {
        var map = Fresh();
        map.MarkLocal(10, 5);
        long sum = 0;
        for (int i = 0; i < 2; i++) // the first round warms up the JIT
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (long p = 0; p < DiskSize; p += Bs)
            {
                map.Lookup(p, DiskSize, out long runEnd, out long d);
                sum += runEnd + d + map.PrepareWrite(p, Bs, out long n) + n;
                if (map.IsLocal(p / Bs)) sum++;
            }
            if (i == 1) Assert.Equal(0L, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.NotEqual(0, sum);
    }
}

/// <summary>Today's layout: data offset = virtual offset, a bitmap in the metadata file.</summary>
public sealed class LinearMapContract : BlockMapContract
{
    private static readonly FvdHeader Header = new()
    {
        Incompatible = IncompatibleFeatures.TwoHeaderSlots,
        VirtualSize = DiskSize,
        BlockSize = Bs,
        BackingSize = BackingSize,
        BitmapOffset = 2 * FvdHeader.Size,
        BitmapLength = FvdHeader.CeilDiv(MapBlocks, 8),
        BackingFormat = "raw",
        BackingPath = "base.raw",
        DataFile = "t.data",
    };

    protected override MemoryDevice NewMetadata()
    {
        var r = MetadataRegions.Of(Header);
        Header.Validate(r.BitmapEnd);
        return new MemoryDevice(r.BitmapEnd);
    }

    private protected override IBlockMap Create(MemoryDevice meta) => Load(meta);

    private protected override IBlockMap Load(MemoryDevice meta) => LinearMap.Load(meta, Header, "t.fvd");

    [Fact]
    public void DataOffsetIsTheVirtualOffset()
    {
        var map = Create(NewMetadata());
        map.MarkLocal(4, 1);
        Assert.Equal(4 * Bs + 9, map.PrepareWrite(4 * Bs + 9, 100, out long n));
        Assert.Equal(100, n);
        map.Lookup(4 * Bs + 9, DiskSize, out _, out long d);
        Assert.Equal(4 * Bs + 9, d);
    }

    [Fact]
    public void DirtyWritesAreBitmapPagesInTheBitmapRegion()
    {
        var map = Create(NewMetadata());
        map.MarkLocal(9, 1);
        var w = Assert.Single(map.TakeDirty().Writes);
        Assert.Equal(Header.BitmapOffset, w.Offset);
        Assert.Equal(Header.BitmapLength, w.Length);
        Assert.Equal(1 << 1, w.Bytes[1]); // block 9: byte 1, bit 1 (LSB first, man/fvd.5)
    }
}
