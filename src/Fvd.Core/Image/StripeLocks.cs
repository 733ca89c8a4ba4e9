// Per-block locks, striped: every 0 -> 1 change of a block's placement (a copy-on-write merge, a
// copy-on-read or prefetch save) happens under its block's stripe, after re-checking the map, so a save
// never overwrites data a guest wrote meanwhile and two partial writes to one block cannot lose each other.
using System.Buffers;

namespace Fvd.Core.Image;

internal sealed class StripeLocks
{
    private const int Count = 1024;
    private readonly object[] _stripes;

    public StripeLocks()
    {
        _stripes = new object[Count];
        for (int i = 0; i < Count; i++) _stripes[i] = new object();
    }

    /// <summary>Locks the stripes of blocks [first, last] in ascending order (no deadlock); returns the indices held.</summary>
    public Span<int> Lock(long first, long last, Span<int> buf, out int[]? rented)
    {
        rented = null;
        long count = Math.Min(last - first + 1, Count);
        if (count > buf.Length)
        {
            rented = ArrayPool<int>.Shared.Rent((int)count);
            buf = rented;
        }
        var s = buf[..(int)count];
        for (int i = 0; i < count; i++) s[i] = (int)((first + i) % Count);
        s.Sort();
        foreach (int i in s) Monitor.Enter(_stripes[i]);
        return s;
    }

    /// <summary>Releases what Lock took, in reverse order, and returns its rented buffer.</summary>
    public void Unlock(Span<int> held, int[]? rented)
    {
        for (int i = held.Length - 1; i >= 0; i--) Monitor.Exit(_stripes[held[i]]);
        if (rented is not null) ArrayPool<int>.Shared.Return(rented);
    }
}
