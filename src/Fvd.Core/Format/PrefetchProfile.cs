// A prefetch profile (paper 3.4.1, "profile-directed prefetch", designed there but never built): the
// ranges a typical boot reads from the backing, in the order it reads them. Prefetch fetches these first.
// Stored in the metadata file at profile_offset (header region 3) when compatible feature PrefetchProfile
// is set:
//
//   off  size  field
//   0    8     magic "FVDPROF1"
//   8    4     entry count N (at most MaxEntries)
//   12   4     CRC-32C of the N entries
//   16   16*N  entries: u64 offset, u64 length (bytes; inside the backing size)
using System.Buffers.Binary;

namespace Fvd.Core.Format;

public static class PrefetchProfile
{
    public const int HeaderBytes = 16;
    public const int EntryBytes = 16;
    public const int MaxEntries = 1 << 20;
    public static ReadOnlySpan<byte> Magic => "FVDPROF1"u8;

    public static long SizeFor(int entries) => HeaderBytes + (long)EntryBytes * entries;

    public static byte[] Serialize(IReadOnlyList<(long Offset, long Length)> entries)
    {
        if (entries.Count > MaxEntries) throw new FvdException(FvdErrorKind.InvalidArgument, $"profile has {entries.Count} entries; at most {MaxEntries}");
        var b = new byte[SizeFor(entries.Count)];
        Magic.CopyTo(b);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(8), entries.Count);
        for (int i = 0; i < entries.Count; i++)
        {
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(HeaderBytes + i * EntryBytes), entries[i].Offset);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(HeaderBytes + i * EntryBytes + 8), entries[i].Length);
        }
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(12), Crc32C.Compute(b.AsSpan(HeaderBytes)));
        return b;
    }

    /// <summary>Parses and validates a profile region: every entry inside [0, backingSize).</summary>
    public static List<(long Offset, long Length)> Parse(ReadOnlySpan<byte> region, long backingSize, string? path = null)
    {
        static FvdException Bad(string? p, string m) => new(FvdErrorKind.InvalidFormat, "prefetch profile: " + m, p);
        if (region.Length < HeaderBytes || !region[..8].SequenceEqual(Magic)) throw Bad(path, "bad magic");
        int n = BinaryPrimitives.ReadInt32LittleEndian(region[8..]);
        if (n < 0 || n > MaxEntries || SizeFor(n) != region.Length) throw Bad(path, $"entry count {n} does not match the region length {region.Length}");
        if (BinaryPrimitives.ReadUInt32LittleEndian(region[12..]) != Crc32C.Compute(region[HeaderBytes..])) throw Bad(path, "checksum mismatch");
        var list = new List<(long, long)>(n);
        for (int i = 0; i < n; i++)
        {
            long off = BinaryPrimitives.ReadInt64LittleEndian(region[(HeaderBytes + i * EntryBytes)..]);
            long len = BinaryPrimitives.ReadInt64LittleEndian(region[(HeaderBytes + i * EntryBytes + 8)..]);
            if (off < 0 || len <= 0 || off >= backingSize || len > backingSize - off) throw Bad(path, $"entry {i} [{off}, +{len}) is outside the backing");
            list.Add((off, len));
        }
        return list;
    }
}
