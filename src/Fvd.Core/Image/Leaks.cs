// Leaks, in qcow2's sense: data allocated in the data file that the block map does not reference (linear
// layout: blocks whose bit is 0, which therefore still read from the backing). A write that reached the data
// file but not a flush before a crash leaves such data; it is never read and only wastes space. Found by
// fvd-img check; reclaimed by check -r and by the first writable open after an unclean shutdown (recovery).
using Fvd.Core.Image.Mapping;
using Fvd.Core.Io;

namespace Fvd.Core.Image;

internal static class Leaks
{
    /// <summary>
    /// Data-file ranges the map does not reference that hold allocated data, and the allocated bytes in them.
    /// progress gets (bytes scanned, bytes to scan).
    /// </summary>
    public static (List<(long Offset, long Length)> Ranges, long Bytes) Find(IBlockDevice data, IBlockMap map,
        Action<long, long>? progress = null)
    {
        long end = map.UnreferencedLimit;
        var ranges = new List<(long Offset, long Length)>();
        long bytes = 0;
        for (long pos = 0; pos < end;)
        {
            var e = data.GetExtent(pos, end - pos);
            if (e.Length <= 0) break;
            if (e.Kind == ExtentKind.Data)
            {
                for (long p = e.Offset; p < e.End;)
                {
                    var (off, stop) = map.NextUnreferenced(p, e.End);
                    if (off >= stop) break;
                    bytes += Math.Min(stop, e.End) - Math.Max(off, e.Offset);
                    if (ranges.Count > 0 && ranges[^1].Offset + ranges[^1].Length == off) ranges[^1] = (ranges[^1].Offset, ranges[^1].Length + stop - off);
                    else ranges.Add((off, stop - off));
                    p = stop;
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
