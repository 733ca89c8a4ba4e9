// fvd-img compare: the first offset where two disks read differently, as qemu-img compare finds it. Ranges
// both devices report as zeros are not read; a longer disk's extra part must read as zeros unless strict.
using Fvd.Core.Io;

namespace Fvd.Core.Image.ImageOps;

public enum CompareResult { Identical, ContentMismatch, SizeMismatch }

public static class Comparer
{
    private const int Chunk = 1 << 20;

    /// <summary>Compares a and b; offset is the first differing byte for ContentMismatch.</summary>
    public static (CompareResult Result, long Offset) Compare(IBlockDevice a, IBlockDevice b, bool strict, Action<long, long>? progress = null)
    {
        if (strict && a.Length != b.Length) return (CompareResult.SizeMismatch, Math.Min(a.Length, b.Length));
        long common = Math.Min(a.Length, b.Length);
        long total = Math.Max(a.Length, b.Length);
        var ba = new byte[Chunk];
        var bb = new byte[Chunk];
        long pos = 0;
        while (pos < common)
        {
            var ea = a.GetExtent(pos, common - pos);
            var eb = b.GetExtent(pos, common - pos);
            long end = Math.Min(Math.Min(End(ea, common), End(eb, common)), pos + Chunk);
            if (!(ea.Kind == ExtentKind.Zero && eb.Kind == ExtentKind.Zero))
            {
                int n = (int)(end - pos);
                Fill(a, ea, pos, ba.AsSpan(0, n));
                Fill(b, eb, pos, bb.AsSpan(0, n));
                int diff = ba.AsSpan(0, n).CommonPrefixLength(bb.AsSpan(0, n));
                if (diff < n) return (CompareResult.ContentMismatch, pos + diff);
            }
            pos = end;
            progress?.Invoke(pos, total);
        }
        var longer = a.Length > b.Length ? a : b;
        while (pos < total)
        {
            var e = longer.GetExtent(pos, total - pos);
            long end = Math.Min(End(e, total), pos + Chunk);
            if (e.Kind == ExtentKind.Data)
            {
                var span = ba.AsSpan(0, (int)(end - pos));
                longer.Read(pos, span);
                int nz = span.IndexOfAnyExcept((byte)0);
                if (nz >= 0) return (CompareResult.ContentMismatch, pos + nz);
            }
            pos = end;
            progress?.Invoke(pos, total);
        }
        return (CompareResult.Identical, -1);
    }

    private static long End(Extent e, long limit) => e.Length > 0 ? Math.Min(limit, e.End) : limit;

    private static void Fill(IBlockDevice dev, Extent e, long pos, Span<byte> dst)
    {
        if (e.Kind == ExtentKind.Zero) dst.Clear();
        else dev.Read(pos, dst);
    }
}
