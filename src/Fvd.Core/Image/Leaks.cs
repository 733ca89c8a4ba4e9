// Leaks, in qcow2's sense: data allocated in the data file for blocks whose bit is 0, which therefore still
// read from the backing. A write that reached the data file but not a flush before a crash leaves such data;
// it is never read and only wastes space. Found by fvd-img check; reclaimed by check -r and by the first
// writable open after an unclean shutdown (recovery).
using Fvd.Core.Format;
using Fvd.Core.Io;

namespace Fvd.Core.Image;

internal static class Leaks
{
    /// <summary>
    /// Ranges of whole bit-0 blocks in [0, end) that hold allocated data, and the allocated bytes in them.
    /// progress gets (bytes scanned, end).
    /// </summary>
    public static (List<(long Offset, long Length)> Ranges, long Bytes) Find(IBlockDevice data, Bitmap bitmap, long blockSize, long end,
        Action<long, long>? progress = null)
    {
        var ranges = new List<(long Offset, long Length)>();
        long bytes = 0;
        for (long pos = 0; pos < end;)
        {
            var e = data.GetExtent(pos, end - pos);
            if (e.Length <= 0) break;
            if (e.Kind == ExtentKind.Data)
            {
                for (long b = e.Offset / blockSize, last = (e.End - 1) / blockSize; b <= last;)
                {
                    long z = bitmap.NextWithValue(b, last + 1, false);
                    if (z > last) break;
                    long z2 = Math.Min(bitmap.NextWithValue(z, last + 1, true), last + 1);
                    long off = z * blockSize, len = Math.Min(z2 * blockSize, end) - off;
                    bytes += Math.Min(off + len, e.End) - Math.Max(off, e.Offset);
                    if (ranges.Count > 0 && ranges[^1].Offset + ranges[^1].Length == off) ranges[^1] = (ranges[^1].Offset, ranges[^1].Length + len);
                    else ranges.Add((off, len));
                    b = z2;
                }
            }
            pos = e.End;
            progress?.Invoke(pos, end);
        }
        progress?.Invoke(end, end);
        return (ranges, bytes);
    }

    /// <summary>Punches the ranges out and makes that durable. Only while nothing else uses the image.</summary>
    public static void Reclaim(IBlockDevice data, List<(long Offset, long Length)> ranges)
    {
        foreach (var (off, len) in ranges) data.Discard(off, len);
        data.Flush();
    }
}
