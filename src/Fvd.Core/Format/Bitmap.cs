// The FVD block bitmap (paper 3.3.1): bit b = 1 means block b lives in the data file; 0 means the backing
// image holds it. On disk: ceil(blocks / 8) bytes, LSB-first in each byte (bit b is byte b/8, bit b%8) —
// the original FVD's order. In memory: ulong words whose little-endian bytes are exactly the on-disk bytes.
//
// Bits only ever go 0 -> 1 here (docs/architecture.md §3). Setting is lock-free (Interlocked.Or), and each
// 4 KiB page of the on-disk bitmap carries a dirty flag so a flush writes only the pages that changed.
using System.Buffers.Binary;
using System.Numerics;

namespace Fvd.Core.Format;

public sealed class Bitmap
{
    public const int PageBytes = 4096;
    private const int WordsPerPage = PageBytes / 8;

    private readonly ulong[] _words;
    private readonly int[] _dirtyPages; // 1 = page changed since the last TakeDirtyPages

    public long Blocks { get; }
    public long ByteLength { get; }
    public int PageCount => _dirtyPages.Length;

    public Bitmap(long blocks)
    {
        if (blocks < 0) throw new ArgumentOutOfRangeException(nameof(blocks));
        Blocks = blocks;
        ByteLength = (blocks + 7) / 8;
        _words = new ulong[(ByteLength + 7) / 8];
        _dirtyPages = new int[(ByteLength + PageBytes - 1) / PageBytes];
    }

    /// <summary>Loads on-disk bytes; bits past Blocks in the last byte must be zero.</summary>
    public static Bitmap FromBytes(long blocks, ReadOnlySpan<byte> bytes, string? path = null)
    {
        var bm = new Bitmap(blocks);
        if (bytes.Length != bm.ByteLength)
            throw new FvdException(FvdErrorKind.InvalidFormat, $"bitmap is {bytes.Length} bytes, expected {bm.ByteLength}", path);
        Span<byte> tail = stackalloc byte[8];
        int full = bytes.Length / 8;
        for (int i = 0; i < full; i++) bm._words[i] = BinaryPrimitives.ReadUInt64LittleEndian(bytes[(i * 8)..]);
        if (bytes.Length % 8 != 0)
        {
            tail.Clear();
            bytes[(full * 8)..].CopyTo(tail);
            bm._words[full] = BinaryPrimitives.ReadUInt64LittleEndian(tail);
        }
        if (blocks % 64 != 0 && bm._words.Length > 0 && (bm._words[^1] >> (int)(blocks % 64)) != 0)
            throw new FvdException(FvdErrorKind.InvalidFormat, "bitmap has bits set past the last block", path);
        return bm;
    }

    public bool Get(long block) => (Volatile.Read(ref _words[block >> 6]) & (1UL << (int)(block & 63))) != 0;

    /// <summary>True when every bit is set (all blocks local).</summary>
    public bool AllSet => NextWithValue(0, Blocks, false) == Blocks;

    public long CountSet()
    {
        long n = 0;
        foreach (var w in _words) n += BitOperations.PopCount(w);
        return n;
    }

    /// <summary>Sets bits [first, first+count) and marks their pages dirty.</summary>
    public void SetRange(long first, long count)
    {
        if (first < 0 || count < 0 || first + count > Blocks) throw new ArgumentOutOfRangeException(nameof(first));
        long end = first + count;
        for (long b = first; b < end;)
        {
            int w = (int)(b >> 6);
            int lo = (int)(b & 63);
            int n = (int)Math.Min(64 - lo, end - b);
            ulong mask = n == 64 ? ~0UL : ((1UL << n) - 1) << lo;
            if ((Volatile.Read(ref _words[w]) & mask) != mask)
            {
                Interlocked.Or(ref _words[w], mask);
                Volatile.Write(ref _dirtyPages[w / WordsPerPage], 1);
            }
            b += n;
        }
    }

    /// <summary>
    /// The first block in [from, limit) whose bit equals value, or limit. Word-at-a-time, so scanning a
    /// 1 TiB image's 4 MiB bitmap is fast.
    /// </summary>
    public long NextWithValue(long from, long limit, bool value)
    {
        limit = Math.Min(limit, Blocks);
        long b = from;
        while (b < limit)
        {
            int w = (int)(b >> 6);
            ulong word = Volatile.Read(ref _words[w]);
            if (!value) word = ~word;
            word &= ~0UL << (int)(b & 63);
            if (word != 0)
            {
                long hit = ((long)w << 6) + BitOperations.TrailingZeroCount(word);
                return Math.Min(hit, limit);
            }
            b = ((long)w + 1) << 6;
        }
        return limit;
    }

    /// <summary>Copies the on-disk bytes of one page into dst (which is PageBytes long; the tail is zeroed).</summary>
    public int CopyPage(int page, Span<byte> dst)
    {
        dst.Clear();
        long start = (long)page * PageBytes;
        int len = (int)Math.Min(PageBytes, ByteLength - start);
        int firstWord = page * WordsPerPage;
        int words = (len + 7) / 8;
        Span<byte> tmp = stackalloc byte[8];
        for (int i = 0; i < words; i++)
        {
            ulong v = Volatile.Read(ref _words[firstWord + i]);
            int take = Math.Min(8, len - i * 8);
            if (take == 8) BinaryPrimitives.WriteUInt64LittleEndian(dst[(i * 8)..], v);
            else
            {
                BinaryPrimitives.WriteUInt64LittleEndian(tmp, v);
                tmp[..take].CopyTo(dst[(i * 8)..]);
            }
        }
        return len;
    }

    /// <summary>Clears and returns the indices of dirty pages; the caller writes them or calls MarkDirty on failure.</summary>
    public List<int> TakeDirtyPages()
    {
        var list = new List<int>();
        for (int p = 0; p < _dirtyPages.Length; p++)
            if (Volatile.Read(ref _dirtyPages[p]) != 0 && Interlocked.Exchange(ref _dirtyPages[p], 0) != 0) list.Add(p);
        return list;
    }

    public void MarkDirty(int page) => Volatile.Write(ref _dirtyPages[page], 1);

    public byte[] ToBytes()
    {
        var b = new byte[ByteLength];
        var page = new byte[PageBytes];
        for (int p = 0; p < PageCount; p++)
        {
            int n = CopyPage(p, page);
            page.AsSpan(0, n).CopyTo(b.AsSpan(p * PageBytes));
        }
        return b;
    }
}
