// Reads: split by the bitmap into runs served by the data file and runs served by the backing image
// (paper 3.2). Bytes past the backing's end read as zeros; once prefetch has finished, everything is local.
using System.Buffers;
using Fvd.Core.Image.Mapping;
using Fvd.Core.Io;

namespace Fvd.Core.Image;

public sealed partial class FvdImage
{
    public void Read(long offset, Span<byte> buffer)
    {
        ThrowIfDisposed();
        DeviceChecks.Range(this, offset, buffer.Length, Path);
        long pos = offset;
        long end = offset + buffer.Length;
        while (pos < end)
        {
            var place = _map.Lookup(pos, end, out long runEnd, out long dataOffset);
            var dst = buffer.Slice((int)(pos - offset), (int)(runEnd - pos));
            if (place == Placement.Local) _data.Read(dataOffset, dst);
            else if (_copyOnRead) ReadWithCopyOnRead(pos, dst);
            else ReadBacking(pos, dst);
            pos = runEnd;
        }
    }

    /// <summary>
    /// True when serving this request may read the backing (and so wait on a slow server): a read of a range
    /// not all local, or a write whose partly covered first or last block is still in the backing. False
    /// means the request touches only the data file.
    /// </summary>
    public bool MayReadBacking(long offset, long length, bool write)
    {
        long end = Math.Min(offset + Math.Max(0, length), Length);
        if (offset < 0 || offset >= Math.Min(end, _map.MappedEnd) || _map.Finished) return false;
        if (!write) return _map.Lookup(offset, end, out long runEnd, out _) != Placement.Local || runEnd < end;
        return EdgeInBacking(offset >> _blockShift) || EdgeInBacking((end - 1) >> _blockShift);

        bool EdgeInBacking(long b) => !_map.IsLocal(b) && IsPartial(b, offset, end);
    }

    /// <summary>True once every block is local (prefetch finished): the backing is never consulted.</summary>
    private bool AllLocal => _map.Finished;

    /// <summary>Reads backing content for [pos, pos+dst.Length); the part past the backing's end is zeros.</summary>
    private void ReadBacking(long pos, Span<byte> dst, bool prefetch = false)
    {
        long inBacking = Math.Clamp(Header.BackingSize - pos, 0, dst.Length);
        if (inBacking > 0)
        {
            if (_backing is null)
                throw new FvdException(FvdErrorKind.NotFound, "backing file is not available", BackingPath ?? Path);
            _backing.Read(pos, dst[..(int)inBacking]);
            Interlocked.Add(ref _backingBytesRead, inBacking);
            if (!prefetch) RecordBackingRead(pos, inBacking); // a profile records what the guest needs
        }
        dst[(int)inBacking..].Clear();
    }

    /// <summary>Where each range of the disk comes from (fvd-img map, SEEK_DATA/SEEK_HOLE).</summary>
    public IEnumerable<MapEntry> Map(long offset = 0, long length = -1)
    {
        ThrowIfDisposed();
        long end = length < 0 ? Length : offset + Math.Min(length, Length - offset); // no overflow for long.MaxValue
        long pos = offset;
        MapEntry? pending = null;
        while (pos < end)
        {
            bool local = _map.Lookup(pos, end, out long runEnd, out long dataOffset) == Placement.Local;
            for (long p = pos; p < runEnd;)
            {
                MapEntry e;
                if (local)
                {
                    var x = _data.GetExtent(dataOffset + (p - pos), runEnd - p);
                    e = new MapEntry(p, x.Length, x.Kind == ExtentKind.Data ? MapKind.Data : MapKind.Zero);
                }
                else
                {
                    long inBacking = Math.Min(runEnd, Header.BackingSize);
                    if (p >= inBacking) e = new MapEntry(p, runEnd - p, MapKind.BackingZero);
                    else if (_backing is null) e = new MapEntry(p, inBacking - p, MapKind.Backing);
                    else
                    {
                        var x = _backing.GetExtent(p, inBacking - p);
                        e = new MapEntry(p, x.Length, x.Kind == ExtentKind.Data ? MapKind.Backing : MapKind.BackingZero);
                    }
                }
                if (e.Length <= 0) throw new FvdException(FvdErrorKind.Io, $"extent query at {p} returned nothing", Path);
                if (pending is { } q && q.Kind == e.Kind && q.Offset + q.Length == e.Offset)
                    pending = q with { Length = q.Length + e.Length };
                else
                {
                    if (pending is { } done) yield return done;
                    pending = e;
                }
                p += e.Length;
            }
            pos = runEnd;
        }
        if (pending is { } last) yield return last;
    }

    public Extent GetExtent(long offset, long maxLength)
    {
        DeviceChecks.Range(this, offset, 1, Path);
        long limit = offset + Math.Min(maxLength, Length - offset); // no overflow for maxLength = long.MaxValue
        ExtentKind? kind = null;
        long pos = offset;
        foreach (var m in Map(offset, limit - offset))
        {
            var k = m.Kind is MapKind.Data or MapKind.Backing ? ExtentKind.Data : ExtentKind.Zero;
            if (kind is null) kind = k;
            else if (kind != k) break;
            pos = m.Offset + m.Length;
        }
        return new Extent(kind ?? ExtentKind.Zero, offset, pos - offset);
    }

    /// <summary>Rents a block-sized buffer; returned with ArrayPool.Shared.Return.</summary>
    private byte[] RentBlock() => ArrayPool<byte>.Shared.Rent(BlockSize);
}
