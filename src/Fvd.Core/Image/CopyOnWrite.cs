// Writes, discards and zeroing: copy-on-write per block (paper 3.2, 3.3.2).
//
// Only the first and last block of a request can be partly covered. A partly covered block that is still
// in the backing is read, merged and written whole ("read-merge-write"); fully covered blocks are written
// directly. Blocks already local, and everything past the backing's end, touch no metadata ("free
// writes"). Where data goes and which blocks are local is the block map's (Mapping/IBlockMap.cs); blocks
// are marked local in memory after the data write completes and reach the disk at the next Flush.
//
// Concurrency: requests that touch a block still in the backing take that block's stripe lock (in
// ascending order, so no deadlock) and re-check the bit under it, so two partial writes to one uncopied
// block cannot lose each other. Requests over local blocks take no lock.
using System.Buffers;
using Fvd.Core.Image.Mapping;

namespace Fvd.Core.Image;

internal enum WriteOp { Write, Discard, Zero }

internal sealed class CopyOnWrite(IBlockMap map, DataFile data, BackingReader backing, StripeLocks stripes, long length)
{
    private readonly int _blockShift = map.BlockShift;
    private int BlockSize => 1 << _blockShift;

    /// <summary>Applies a checked, non-empty request.</summary>
    public void Modify(WriteOp op, long offset, long len, ReadOnlySpan<byte> src)
    {
        long end = offset + len;
        long covered = Math.Min(end, map.MappedEnd); // the part that has bits
        if (offset >= covered || map.NextInBacking(offset >> _blockShift, ((covered - 1) >> _blockShift) + 1) > (covered - 1) >> _blockShift)
        {
            Direct(op, offset, len, src);
            return;
        }

        long firstBlock = offset >> _blockShift;
        long lastBlock = (covered - 1) >> _blockShift;
        Span<int> stripeBuf = stackalloc int[64];
        var held = stripes.Lock(firstBlock, lastBlock, stripeBuf, out int[]? rented);
        try
        {
            ModifyLocked(op, offset, end, src);
        }
        finally
        {
            stripes.Unlock(held, rented);
        }
    }

    /// <summary>True when a write of [offset, end) must read block b from the backing (partly covered, not local).</summary>
    public bool EdgeInBacking(long b, long offset, long end) => !map.IsLocal(b) && IsPartial(b, offset, end);

    private void ModifyLocked(WriteOp op, long offset, long end, ReadOnlySpan<byte> src)
    {
        // Every backing read happens before the first data write: the last block's content is read up
        // front, so a backing that fails or a request that is interrupted (IoCancellation) leaves nothing
        // written. The first block is read first anyway.
        long lastB = (end - 1) >> _blockShift;
        byte[]? tail = null;
        try
        {
            if (lastB != offset >> _blockShift && !map.IsLocal(lastB) && IsPartial(lastB, offset, end))
            {
                tail = ArrayPool<byte>.Shared.Rent(BlockSize);
                backing.Read(lastB << _blockShift, tail.AsSpan(0, (int)(BlockEnd(lastB) - (lastB << _blockShift))));
            }
            ModifyRuns(op, offset, end, src, tail);
        }
        finally
        {
            if (tail is not null) ArrayPool<byte>.Shared.Return(tail);
        }
    }

    private void ModifyRuns(WriteOp op, long offset, long end, ReadOnlySpan<byte> src, byte[]? tail)
    {
        long pos = offset;
        while (pos < end)
        {
            long b = pos >> _blockShift;
            if (!map.IsLocal(b) && IsPartial(b, pos, end))
            {
                long pieceEnd = Math.Min(end, BlockEnd(b));
                MergeBlock(op, b, pos, pieceEnd, op == WriteOp.Write ? src[(int)(pos - offset)..] : default, pos > offset ? tail : null);
                pos = pieceEnd;
                continue;
            }
            // A run of blocks that are local or fully covered: one direct request, then set their bits.
            long runStart = pos;
            while (pos < end)
            {
                b = pos >> _blockShift;
                if (pos >= map.MappedEnd) { pos = end; break; }
                if (!map.IsLocal(b) && IsPartial(b, pos, end)) break;
                pos = Math.Min(end, BlockEnd(b));
            }
            Direct(op, runStart, pos - runStart, op == WriteOp.Write ? src.Slice((int)(runStart - offset), (int)(pos - runStart)) : default);
            long fb = runStart >> _blockShift;
            map.MarkLocal(fb, ((pos - 1) >> _blockShift) + 1 - fb); // partial edges here are local already
        }
    }

    private long BlockEnd(long b) => Math.Min((b + 1) << _blockShift, length);

    /// <summary>True when [offset, end) does not cover the whole of block b (clipped to the disk's end).</summary>
    private bool IsPartial(long b, long offset, long end)
    {
        return offset > b << _blockShift || end < BlockEnd(b);
    }

    /// <summary>
    /// Read-merge-write of one block that is still in the backing; then its bit is set. <paramref name="content"/>
    /// holds the block's backing content when it was read already.
    /// </summary>
    private void MergeBlock(WriteOp op, long block, long from, long to, ReadOnlySpan<byte> src, byte[]? content = null)
    {
        long start = block << _blockShift;
        int len = (int)(Math.Min(start + BlockSize, length) - start);
        byte[] buf = content ?? ArrayPool<byte>.Shared.Rent(BlockSize);
        try
        {
            var b = buf.AsSpan(0, len);
            if (content is null) backing.Read(start, b);
            var piece = b.Slice((int)(from - start), (int)(to - from));
            if (op == WriteOp.Write) src[..(int)(to - from)].CopyTo(piece);
            else piece.Clear();
            data.Write(start, b);
        }
        finally
        {
            if (content is null) ArrayPool<byte>.Shared.Return(buf);
        }
        map.MarkLocal(block, 1);
    }

    private void Direct(WriteOp op, long offset, long len, ReadOnlySpan<byte> src)
    {
        switch (op)
        {
            case WriteOp.Write: data.Write(offset, src); break;
            case WriteOp.Discard: data.Discard(offset, len); break;
            default: data.WriteZeroes(offset, len); break;
        }
    }
}
