// The two header copies of an image with the TwoHeaderSlots feature (man/fvd.5, "Header slots").
//
// Slot 0 is at offset 0, slot 1 at offset 4096. A writer never rewrites the current copy: it writes the new
// header, generation + 1, into the other slot and then flushes, so a torn header write leaves one slot with a
// bad CRC and the other, older copy intact. A reader takes the valid copy with the larger generation; on a
// tie slot 0 wins. Single-slot images (no feature bit in slot 0) are read from slot 0 alone: their offset
// 4096 holds the bitmap.
namespace Fvd.Core.Format;

/// <summary>The copy in use: its header and slot, and what is wrong with the other slot (null when nothing).</summary>
public sealed record HeaderChoice(FvdHeader Header, int Slot, string? OtherProblem);

public static class HeaderSlots
{
    public const int Count = 2;

    public static long Offset(int slot) => (long)slot * FvdHeader.Size;

    /// <summary>
    /// What the next header write puts where: next with generation + 1, in the slot that does not hold the
    /// current copy (single-slot images: next itself, in place). The caller writes, flushes, and only then
    /// takes the result as current, so a failed write is retried into the same slot, never the good one.
    /// </summary>
    public static (FvdHeader Header, int Slot) Prepare(FvdHeader current, int currentSlot, FvdHeader next) =>
        current.TwoSlots ? (next with { Generation = current.Generation + 1 }, 1 - currentSlot) : (next, 0);

    /// <summary>
    /// Picks the current header from the start of NAME.fvd (at least 4096 bytes; the second slot is used when
    /// present). metadataLength is the file's size, for validation. Throws when no copy is usable, and when
    /// any copy uses a feature this build does not know (an older copy must not hide a newer format).
    /// </summary>
    public static HeaderChoice Choose(ReadOnlySpan<byte> start, long metadataLength, string? path = null)
    {
        var (a, ea) = Read(start, metadataLength, path);
        if (a is not null && !a.TwoSlots)
        {
            if (ea is not null) throw ea;
            return new HeaderChoice(a, 0, null);
        }
        FvdHeader? b = null;
        FvdException? eb;
        if (start.Length < 2 * FvdHeader.Size) eb = new FvdException(FvdErrorKind.InvalidFormat, "no second header copy (file too short)", path);
        else
        {
            (b, eb) = Read(start[FvdHeader.Size..], metadataLength, path);
            if (b is not null && eb is null && !b.TwoSlots)
                eb = new FvdException(FvdErrorKind.InvalidFormat, "header copy does not declare two header slots", path);
        }
        if (ea?.Kind == FvdErrorKind.UnsupportedFeature) throw ea;
        if (eb?.Kind == FvdErrorKind.UnsupportedFeature)
            throw new FvdException(eb.Kind, $"header copy 1: {eb.Message}", path);
        if (ea is null && eb is null)
        {
            if (b!.Generation > a!.Generation) return new HeaderChoice(b, 1, null);
            bool same = start[..FvdHeader.Size].SequenceEqual(start.Slice(FvdHeader.Size, FvdHeader.Size));
            return new HeaderChoice(a, 0, a.Generation == b.Generation && !same
                ? $"header copies 0 and 1 both have generation {a.Generation} but differ (copy 0 is used)" : null);
        }
        if (ea is null) return new HeaderChoice(a!, 0, $"header copy 1 (offset {FvdHeader.Size}) is unusable: {eb!.Message}");
        if (eb is null) return new HeaderChoice(b!, 1, $"header copy 0 (offset 0) is unusable: {ea.Message}");
        // Neither: a single-slot image whose only header is bad shows that header's error alone.
        bool slot1LooksLikeHeader = start.Length >= 2 * FvdHeader.Size && start.Slice(FvdHeader.Size, FvdHeader.Magic.Length).SequenceEqual(FvdHeader.Magic);
        if (!slot1LooksLikeHeader) throw ea;
        throw new FvdException(ea.Kind, $"{ea.Message}; header copy 1: {eb!.Message}", path);
    }

    /// <summary>The current header of a whole NAME.fvd held in memory (tools and tests).</summary>
    public static FvdHeader Current(ReadOnlySpan<byte> file, string? path = null) => Choose(file, file.Length, path).Header;

    /// <summary>Parses and validates one copy: (header if its bytes decode, error if it is unusable).</summary>
    private static (FvdHeader?, FvdException?) Read(ReadOnlySpan<byte> slot, long metadataLength, string? path)
    {
        FvdHeader h;
        try
        {
            h = FvdHeader.Parse(slot, path);
        }
        catch (FvdException e)
        {
            return (null, e);
        }
        try
        {
            h.Validate(metadataLength, path);
            return (h, null);
        }
        catch (FvdException e)
        {
            return (h, e);
        }
    }

    /// <summary>
    /// The bytes of a new image's header area: the header in every slot it has (both copies equal, so
    /// either alone is a complete image).
    /// </summary>
    public static byte[] Initial(FvdHeader h)
    {
        var b = new byte[h.HeaderArea];
        for (int s = 0; s < b.Length / FvdHeader.Size; s++) h.WriteTo(b.AsSpan(s * FvdHeader.Size));
        return b;
    }
}
