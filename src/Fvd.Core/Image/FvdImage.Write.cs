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
using Fvd.Core.Io;

namespace Fvd.Core.Image;

public sealed partial class FvdImage
{
    private const int StripeCount = 1024;
    private readonly object[] _stripes;

    private enum Op { Write, Discard, Zero }

    public void Write(long offset, ReadOnlySpan<byte> buffer) => Modify(Op.Write, offset, buffer.Length, buffer);

    /// <summary>Deallocates a range; it reads as zeros afterwards, also where the backing had data.</summary>
    public void Discard(long offset, long length) => Modify(Op.Discard, offset, length, default);

    public void WriteZeroes(long offset, long length) => Modify(Op.Zero, offset, length, default);

    private void Modify(Op op, long offset, long length, ReadOnlySpan<byte> src)
    {
        ThrowIfDisposed();
        DeviceChecks.Writable(this, Path);
        DeviceChecks.Range(this, offset, length, Path);
        if (length == 0) return;
        long end = offset + length;
        long covered = Math.Min(end, _map.MappedEnd); // the part that has bits
        if (offset >= covered || _map.NextInBacking(offset >> _blockShift, ((covered - 1) >> _blockShift) + 1) > (covered - 1) >> _blockShift)
        {
            Direct(op, offset, length, src);
            return;
        }

        long firstBlock = offset >> _blockShift;
        long lastBlock = (covered - 1) >> _blockShift;
        Span<int> stripeBuf = stackalloc int[64];
        var stripes = LockStripes(firstBlock, lastBlock, stripeBuf, out int[]? rented);
        try
        {
            ModifyLocked(op, offset, end, src);
        }
        finally
        {
            UnlockStripes(stripes, rented);
        }
    }

    private void ModifyLocked(Op op, long offset, long end, ReadOnlySpan<byte> src)
    {
        // Every backing read happens before the first data write: the last block's content is read up
        // front, so a backing that fails or a request that is interrupted (IoCancellation) leaves nothing
        // written. The first block is read first anyway.
        long lastB = (end - 1) >> _blockShift;
        byte[]? tail = null;
        try
        {
            if (lastB != offset >> _blockShift && !_map.IsLocal(lastB) && IsPartial(lastB, offset, end))
            {
                tail = RentBlock();
                ReadBacking(lastB << _blockShift, tail.AsSpan(0, (int)(BlockEnd(lastB) - (lastB << _blockShift))));
            }
            ModifyRuns(op, offset, end, src, tail);
        }
        finally
        {
            if (tail is not null) ArrayPool<byte>.Shared.Return(tail);
        }
    }

    private void ModifyRuns(Op op, long offset, long end, ReadOnlySpan<byte> src, byte[]? tail)
    {
        long pos = offset;
        while (pos < end)
        {
            long b = pos >> _blockShift;
            if (!_map.IsLocal(b) && IsPartial(b, pos, end))
            {
                long pieceEnd = Math.Min(end, BlockEnd(b));
                MergeBlock(op, b, pos, pieceEnd, op == Op.Write ? src[(int)(pos - offset)..] : default, pos > offset ? tail : null);
                pos = pieceEnd;
                continue;
            }
            // A run of blocks that are local or fully covered: one direct request, then set their bits.
            long runStart = pos;
            while (pos < end)
            {
                b = pos >> _blockShift;
                if (pos >= _map.MappedEnd) { pos = end; break; }
                if (!_map.IsLocal(b) && IsPartial(b, pos, end)) break;
                pos = Math.Min(end, BlockEnd(b));
            }
            Direct(op, runStart, pos - runStart, op == Op.Write ? src.Slice((int)(runStart - offset), (int)(pos - runStart)) : default);
            long fb = runStart >> _blockShift;
            _map.MarkLocal(fb, ((pos - 1) >> _blockShift) + 1 - fb); // partial edges here are local already
        }
    }

    private long BlockEnd(long b) => Math.Min((b + 1) << _blockShift, Length);

    /// <summary>True when [offset, end) does not cover the whole of block b (clipped to the disk's end).</summary>
    private bool IsPartial(long b, long offset, long end)
    {
        return offset > b << _blockShift || end < BlockEnd(b);
    }

    /// <summary>
    /// Read-merge-write of one block that is still in the backing; then its bit is set. <paramref name="backing"/>
    /// holds the block's backing content when it was read already.
    /// </summary>
    private void MergeBlock(Op op, long block, long from, long to, ReadOnlySpan<byte> src, byte[]? backing = null)
    {
        long start = block << _blockShift;
        int len = (int)(Math.Min(start + BlockSize, Length) - start);
        byte[] buf = backing ?? RentBlock();
        try
        {
            var b = buf.AsSpan(0, len);
            if (backing is null) ReadBacking(start, b);
            var piece = b.Slice((int)(from - start), (int)(to - from));
            if (op == Op.Write) src[..(int)(to - from)].CopyTo(piece);
            else piece.Clear();
            WriteData(start, b);
        }
        finally
        {
            if (backing is null) ArrayPool<byte>.Shared.Return(buf);
        }
        _map.MarkLocal(block, 1);
    }

    /// <summary>Writes, discards or zeroes [offset, offset + length) where the map places it in the data file.</summary>
    private void Direct(Op op, long offset, long length, ReadOnlySpan<byte> src)
    {
        for (long done = 0; done < length;)
        {
            long at = _map.PrepareWrite(offset + done, length - done, out long n);
            switch (op)
            {
                case Op.Write: _data.Write(at, src.Slice((int)done, (int)n)); break;
                case Op.Discard: _data.Discard(at, n); break;
                default: _data.WriteZeroes(at, n); break;
            }
            done += n;
        }
        _metadata.MarkDataWritten();
    }

    /// <summary>Writes src at virtual offset into the data file where the map places it; the caller marks blocks local after.</summary>
    private void WriteData(long offset, ReadOnlySpan<byte> src) => Direct(Op.Write, offset, src.Length, src);

    /// <summary>Releases what LockStripes took, in reverse order, and returns its rented buffer.</summary>
    private void UnlockStripes(Span<int> held, int[]? rented)
    {
        for (int i = held.Length - 1; i >= 0; i--) Monitor.Exit(_stripes[held[i]]);
        if (rented is not null) ArrayPool<int>.Shared.Return(rented);
    }

    /// <summary>Locks the stripes of blocks [first, last] in ascending order; returns the indices held.</summary>
    private Span<int> LockStripes(long first, long last, Span<int> buf, out int[]? rented)
    {
        rented = null;
        long count = Math.Min(last - first + 1, StripeCount);
        if (count > buf.Length)
        {
            rented = ArrayPool<int>.Shared.Rent((int)count);
            buf = rented;
        }
        var s = buf[..(int)count];
        for (int i = 0; i < count; i++) s[i] = (int)((first + i) % StripeCount);
        s.Sort();
        foreach (int i in s) Monitor.Enter(_stripes[i]);
        return s;
    }
}
