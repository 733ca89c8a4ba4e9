// Where each part of NAME.fvd lies (man/fvd.5): the header slots, the bitmap, the inline data area and the
// prefetch profile. Computed from a header in one place, so create, validation, the profile writer and the
// open image agree on where the fixed metadata ends.
namespace Fvd.Core.Format;

public readonly record struct MetadataRegions
{
    /// <summary>Header copies at the start of the file: 1, or 2 with the TwoHeaderSlots feature.</summary>
    public int Slots { get; init; }
    /// <summary>Bytes the header copies take (Slots x 4096).</summary>
    public long HeaderArea { get; init; }
    public long BitmapOffset { get; init; }
    public long BitmapLength { get; init; }
    /// <summary>End of the header area and bitmap, rounded up to a 4096-byte page.</summary>
    public long BitmapEnd { get; init; }
    /// <summary>The inline data area (0, 0 when the data lives in its own file).</summary>
    public (long Offset, long Length) InlineData { get; init; }
    /// <summary>The stored prefetch profile (0, 0 when none).</summary>
    public (long Offset, long Length) Profile { get; init; }
    /// <summary>Where a new profile is written: the first page after everything else that has a fixed place.</summary>
    public long FreeStart { get; init; }

    /// <summary>Offset of header copy slot (0 or 1).</summary>
    public long SlotOffset(int slot)
    {
        if (slot < 0 || slot >= Slots) throw new ArgumentOutOfRangeException(nameof(slot));
        return HeaderSlots.Offset(slot);
    }

    /// <summary>The end of a header area followed by a bitmap of bitmapLength bytes (no bitmap: the header area).</summary>
    public static long EndOfBitmap(long headerArea, long bitmapLength) =>
        bitmapLength == 0 ? headerArea : FvdHeader.AlignUp(headerArea + bitmapLength, 4096);

    /// <summary>The regions a header names. The header's offsets are taken as they are (Validate checks them).</summary>
    public static MetadataRegions Of(FvdHeader h)
    {
        long bitmapEnd = EndOfBitmap(h.HeaderArea, h.BitmapLength);
        var inline = h.InlineData ? (h.DataOffset, h.VirtualSize) : (0L, 0L);
        bool profile = (h.Compatible & CompatibleFeatures.PrefetchProfile) != 0;
        return new MetadataRegions
        {
            Slots = h.TwoSlots ? HeaderSlots.Count : 1,
            HeaderArea = h.HeaderArea,
            BitmapOffset = h.BitmapOffset,
            BitmapLength = h.BitmapLength,
            BitmapEnd = bitmapEnd,
            InlineData = inline,
            Profile = profile ? h.ReservedRegions[FvdHeader.ProfileRegion] : (0, 0),
            FreeStart = h.InlineData ? FvdHeader.AlignUp(h.DataOffset + h.VirtualSize, 4096) : bitmapEnd,
        };
    }
}
