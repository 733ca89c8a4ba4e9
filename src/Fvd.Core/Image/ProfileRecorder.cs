// Profile-directed prefetch (paper 3.4.1): remembers which blocks of the backing were read first.
using Fvd.Core.Format;

namespace Fvd.Core.Image;

/// <summary>
/// Entries end at the backing's end, not at the end of its last block: a template whose size is not a
/// multiple of the block size (a GPT disk, with its backup header in the last sector) would otherwise give
/// a profile the image refuses to store.
/// </summary>
internal sealed class ProfileRecorder(long backingSize, int shift)
{
    private readonly Bitmap _seen = new(FvdHeader.CeilDiv(backingSize, 1L << shift));
    private readonly List<long> _order = new();
    private readonly object _lock = new();

    public void Record(long pos, long len)
    {
        long first = pos >> shift, last = Math.Min(_seen.Blocks - 1, (pos + len - 1) >> shift);
        lock (_lock)
        {
            for (long b = first; b <= last; b++)
            {
                if (_seen.Get(b) || _order.Count >= PrefetchProfile.MaxEntries) continue;
                _seen.SetRange(b, 1);
                _order.Add(b);
            }
        }
    }

    /// <summary>The ranges recorded so far, in first-read order, merged where adjacent.</summary>
    public List<(long Offset, long Length)> Entries()
    {
        var list = new List<(long Offset, long Length)>();
        lock (_lock)
        {
            foreach (long b in _order)
            {
                long off = b << shift, len = Math.Min(1L << shift, backingSize - off);
                if (list.Count > 0 && list[^1].Offset + list[^1].Length == off) list[^1] = (list[^1].Offset, list[^1].Length + len);
                else list.Add((off, len));
            }
        }
        return list;
    }
}
