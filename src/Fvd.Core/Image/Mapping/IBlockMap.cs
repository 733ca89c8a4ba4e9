// The mapping seam between the driver and its storage (docs/architecture.md §6): where a virtual block lives
// and what metadata a write changes. Read, write, copy-on-read, prefetch, the leak scan and the checker ask
// the map; none of them computes a data offset or reads the bitmap itself. LinearMap is today's layout
// (data offset = virtual offset, a bitmap says local); a compact layout (a table of chunks) will be another.
//
// Blocks are the bitmap's blocks (the header's block size). The map covers [0, MappedEnd) of the disk;
// everything past it is local at its own offset ("free writes", man/fvd.5).
namespace Fvd.Core.Image.Mapping;

internal enum Placement
{
    /// <summary>In the data file, at the data offset the lookup returns.</summary>
    Local,
    /// <summary>Still in the backing (read from the backing at the same virtual offset).</summary>
    Backing,
}

internal interface IBlockMap
{
    /// <summary>log2 of the block size.</summary>
    int BlockShift { get; }
    /// <summary>Blocks that have a place in the map (the bitmap's blocks); past them all is local.</summary>
    long Blocks { get; }
    /// <summary>End of the bytes the map covers: min(Blocks x block size, disk size).</summary>
    long MappedEnd { get; }
    /// <summary>True once the image is finished (every block local, persisted): the backing is never asked.</summary>
    bool Finished { get; }
    /// <summary>Records that the finished state is persisted (after the header says so).</summary>
    void MarkFinished();

    /// <summary>
    /// Where [pos, end) starts, and the end of the run from pos (at most end) with the same answer and, when
    /// local, contiguous in the data file: reads and map queries split by it. Allocates nothing.
    /// </summary>
    Placement Lookup(long pos, long end, out long runEnd, out long dataOffset);

    /// <summary>True when block b is local (every block past Blocks is).</summary>
    bool IsLocal(long block);

    /// <summary>The first block in [from, limit) still in the backing, or limit.</summary>
    long NextInBacking(long from, long limit);

    /// <summary>The first block in [from, limit) that is local, or limit (limit clipped to Blocks).</summary>
    long NextLocal(long from, long limit);

    /// <summary>
    /// Where a write of [offset, offset + length) goes in the data file: the data offset of its first piece
    /// and that piece's length (contiguous). Linear: the same offset, the whole length.
    /// </summary>
    long PrepareWrite(long offset, long length, out long contiguous);

    /// <summary>Makes blocks [first, first + count) local in memory, after their data write completed (clipped to Blocks).</summary>
    void MarkLocal(long first, long count);

    /// <summary>Local blocks (Blocks once finished).</summary>
    long CountLocal();

    /// <summary>Whether every block is local now (not necessarily persisted yet).</summary>
    bool AllBlocksLocal();

    /// <summary>
    /// What changed since the last call, as writes to the metadata file; the caller writes them after the
    /// data sync and calls Restore when writing fails, so the next flush writes them again.
    /// </summary>
    DirtyMetadata TakeDirty();

    /// <summary>
    /// The first data-file range, in whole blocks, that overlaps [from, limit) and holds no block the map
    /// references (written before a crash, never made local), or (limit, limit) when there is none.
    /// </summary>
    (long Start, long End) NextUnreferenced(long from, long limit);

    /// <summary>End of the data offsets that can be unreferenced (the leak scan stops there).</summary>
    long UnreferencedLimit { get; }
}

/// <summary>Metadata writes a flush must persist after the data sync (offsets in the metadata file).</summary>
internal sealed class DirtyMetadata(List<(long Offset, byte[] Bytes, int Length)> writes, Action? restore)
{
    public static readonly DirtyMetadata None = new(new(), null);

    public IReadOnlyList<(long Offset, byte[] Bytes, int Length)> Writes => writes;

    /// <summary>Marks the changes dirty again (their write failed before any sync).</summary>
    public void Restore() => restore?.Invoke();
}
