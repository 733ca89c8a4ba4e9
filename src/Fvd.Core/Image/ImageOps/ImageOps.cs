// Shared pieces of the offline commands (resize, rebase, commit): the header and bitmap a new backing
// size implies.
using Fvd.Core.Format;

namespace Fvd.Core.Image.ImageOps;

internal static class Metadata
{
    /// <summary>
    /// The header for a new disk size, backing reference and backing size (BackingSize = min(backing, disk)).
    /// A prefetch profile is dropped when the bitmap changes: it describes the old template and lies after
    /// the old bitmap.
    /// </summary>
    public static FvdHeader With(FvdHeader h, long virtualSize, long backingSize, string backingPath, string backingFormat)
    {
        long blocks = backingSize > 0 ? FvdHeader.CeilDiv(backingSize, h.BlockSize) : 0;
        long bitmapLen = FvdHeader.CeilDiv(blocks, 8);
        if (bitmapLen > FvdHeader.MaxBitmapBytes)
            throw new FvdException(FvdErrorKind.InvalidArgument, $"the new backing needs a {bitmapLen}-byte bitmap at block size {h.BlockSize} (at most {FvdHeader.MaxBitmapBytes})");
        var n = h with
        {
            VirtualSize = virtualSize,
            BackingSize = backingSize,
            BackingPath = backingSize > 0 ? backingPath : "",
            BackingFormat = backingSize > 0 ? backingFormat : "",
            BitmapLength = bitmapLen,
            BitmapOffset = bitmapLen > 0 ? h.HeaderArea : 0,
        };
        if (n.BackingSize == h.BackingSize && n.BackingPath == h.BackingPath) return n;
        var regions = ((long, long)[])h.ReservedRegions.Clone();
        regions[FvdHeader.ProfileRegion] = (0, 0);
        return n with
        {
            ReservedRegions = regions,
            Compatible = n.Compatible & ~CompatibleFeatures.PrefetchProfile,
            // Once the backing changes, blocks are in it again: prefetch is not finished.
            Flags = backingSize > 0 ? n.Flags & ~HeaderFlags.PrefetchFinished : n.Flags,
        };
    }

    /// <summary>The bytes of a bitmap of `blocks` bits: bit b = keep(b).</summary>
    public static byte[] Bits(long blocks, Func<long, bool> keep)
    {
        var bm = new Bitmap(blocks);
        long b = 0;
        while (b < blocks)
        {
            if (!keep(b)) { b++; continue; }
            long start = b;
            while (b < blocks && keep(b)) b++;
            bm.SetRange(start, b - start);
        }
        return bm.ToBytes();
    }
}
