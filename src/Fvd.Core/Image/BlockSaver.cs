// The save path shared by copy-on-read and prefetch (paper 3.3.4): backing content of whole blocks goes
// into the data file and the blocks become local in memory only. Their metadata reaches the disk at the
// next flush like any other (after the data's sync), so a crash can only lose blocks whose content equals
// the backing's: nothing is lost. Each block is re-checked under its stripe lock (StripeLocks.cs), so a save
// never overwrites data a guest wrote after the backing read started.
using Fvd.Core.Image.Mapping;

namespace Fvd.Core.Image;

internal sealed class BlockSaver(IBlockMap map, DataFile data, StripeLocks stripes)
{
    /// <summary>
    /// Saves backing content of whole blocks starting at block-aligned offset, block runs at a time,
    /// skipping blocks that became local meanwhile. Returns the bytes saved.
    /// </summary>
    public long Save(long offset, ReadOnlySpan<byte> content)
    {
        int shift = map.BlockShift;
        long first = offset >> shift;
        long count = (content.Length + (1L << shift) - 1) >> shift;
        long saved = 0;
        Span<int> stripeBuf = stackalloc int[64];
        // Lock per group of blocks, so a long prefetch chunk does not hold many stripes.
        for (long g = 0; g < count; g += 64)
        {
            long gEnd = Math.Min(count, g + 64);
            var held = stripes.Lock(first + g, first + gEnd - 1, stripeBuf, out int[]? rented);
            try
            {
                for (long b = g; b < gEnd;)
                {
                    if (map.IsLocal(first + b)) { b++; continue; }
                    long e = b + 1;
                    while (e < gEnd && !map.IsLocal(first + e)) e++;
                    long from = b << shift, to = Math.Min(e << shift, content.Length);
                    data.Write(offset + from, content[(int)from..(int)to]);
                    map.MarkLocal(first + b, e - b);
                    saved += to - from;
                    b = e;
                }
            }
            finally
            {
                stripes.Unlock(held, rented);
            }
        }
        return saved;
    }
}
