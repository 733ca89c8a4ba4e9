// Today's layout (man/fvd.5): block b lives at data offset b x block size; bit b of the bitmap says whether it
// is local (1) or still in the backing (0). Dirty state = the bitmap's dirty 4 KiB pages.
using Fvd.Core.Format;
using Fvd.Core.Io;

namespace Fvd.Core.Image.Mapping;

internal sealed class LinearMap : IBlockMap
{
    private readonly Bitmap _bitmap;
    private readonly long _bitmapOffset;
    private volatile bool _finished;
    private long _firstMissingHint; // no block below it is in the backing (blocks only become local while open)

    public LinearMap(Bitmap bitmap, int blockSize, long virtualSize, long bitmapOffset, bool finished)
    {
        _bitmap = bitmap;
        BlockShift = System.Numerics.BitOperations.Log2((uint)blockSize);
        MappedEnd = Math.Min(bitmap.Blocks << BlockShift, virtualSize);
        _bitmapOffset = bitmapOffset;
        _finished = finished;
    }

    /// <summary>Loads the bitmap of a validated header from the metadata file (or file bytes).</summary>
    public static LinearMap Load(IBlockDevice meta, FvdHeader h, string? path)
    {
        var r = MetadataRegions.Of(h);
        var bytes = new byte[r.BitmapLength];
        if (r.BitmapLength > 0) meta.Read(r.BitmapOffset, bytes);
        return FromBytes(h, bytes, path);
    }

    /// <summary>
    /// A map over bitmap bytes already read (the checker reads and repairs them itself). trustFinished:
    /// false answers from the bits alone, also when the header says every block is local.
    /// </summary>
    public static LinearMap FromBytes(FvdHeader h, ReadOnlySpan<byte> bitmap, string? path, bool trustFinished = true) =>
        new(Bitmap.FromBytes(h.BitmapBlocks, bitmap, path), h.BlockSize, h.VirtualSize, h.BitmapOffset,
            trustFinished && (h.Flags & HeaderFlags.PrefetchFinished) != 0);

    /// <summary>The bitmap itself (tests).</summary>
    internal Bitmap Bitmap => _bitmap;

    public int BlockShift { get; }
    public long Blocks => _bitmap.Blocks;
    public long MappedEnd { get; }
    public bool Finished => _finished;
    public void MarkFinished() => _finished = true;
    public long UnreferencedLimit => MappedEnd;

    public Placement Lookup(long pos, long end, out long runEnd, out long dataOffset)
    {
        dataOffset = pos;
        if (pos >= MappedEnd || _finished)
        {
            runEnd = end;
            return Placement.Local;
        }
        long block = pos >> BlockShift;
        bool local = _bitmap.Get(block);
        long next = _bitmap.NextWithValue(block, _bitmap.Blocks, !local);
        // Past the last bitmap block everything is local, so a local run continues to the end.
        runEnd = local && next == _bitmap.Blocks ? end : Math.Min(end, next << BlockShift);
        return local ? Placement.Local : Placement.Backing;
    }

    public bool IsLocal(long block) => _finished || block >= _bitmap.Blocks || _bitmap.Get(block);

    public long NextInBacking(long from, long limit)
    {
        if (_finished) return limit;
        long b = _bitmap.NextWithValue(from, limit, false); // limit clipped to Blocks: none found past them
        return b >= Math.Min(limit, _bitmap.Blocks) ? limit : b;
    }

    public long NextLocal(long from, long limit) => _bitmap.NextWithValue(from, limit, true);

    public long PrepareWrite(long offset, long length, out long contiguous)
    {
        contiguous = length;
        return offset;
    }

    public void MarkLocal(long first, long count)
    {
        long end = Math.Min(first + count, _bitmap.Blocks);
        if (end > first) _bitmap.SetRange(first, end - first);
    }

    public long CountLocal() => _finished ? _bitmap.Blocks : _bitmap.CountSet();

    /// <summary>The scan starts at the first block not yet seen local: one pass over the bitmap per open in all.</summary>
    public bool AllBlocksLocal()
    {
        if (_finished) return true;
        long first = _bitmap.NextWithValue(Volatile.Read(ref _firstMissingHint), _bitmap.Blocks, false);
        Volatile.Write(ref _firstMissingHint, first); // a racing caller may store a smaller value: still a lower bound
        return first == _bitmap.Blocks;
    }

    public DirtyMetadata TakeDirty()
    {
        if (_bitmap.ByteLength == 0) return DirtyMetadata.None;
        // Snapshot the pages now: every bit set in them belongs to a data write that has already completed.
        var pages = _bitmap.TakeDirtyPages();
        if (pages.Count == 0) return DirtyMetadata.None;
        var writes = new List<(long, byte[], int)>(pages.Count);
        foreach (int p in pages)
        {
            var copy = new byte[Bitmap.PageBytes];
            int len = _bitmap.CopyPage(p, copy);
            writes.Add((_bitmapOffset + (long)p * Bitmap.PageBytes, copy, len));
        }
        return new DirtyMetadata(writes, () => { foreach (int p in pages) _bitmap.MarkDirty(p); });
    }

    public (long Start, long End) NextUnreferenced(long from, long limit)
    {
        limit = Math.Min(limit, MappedEnd);
        if (from >= limit || _finished) return (limit, limit);
        long b = from >> BlockShift, last = (limit - 1) >> BlockShift;
        long z = _bitmap.NextWithValue(b, last + 1, false);
        if (z > last) return (limit, limit);
        long z2 = Math.Min(_bitmap.NextWithValue(z, last + 1, true), last + 1);
        return (z << BlockShift, Math.Min(z2 << BlockShift, MappedEnd));
    }
}
