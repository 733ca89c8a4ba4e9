namespace Fvd.Core.Partitions;

/// <summary>
/// A 512-byte MBR or EBR sector: four entries at 446 and the 0x55 0xAA signature at 510. In an EBR only the
/// first two entries are used: the logical partition (relative to the EBR) and the next EBR (relative to the
/// extended partition's start).
/// </summary>
public sealed class MasterBootRecord
{
    public const int SectorSize = 512;
    public const int EntriesOffset = 446, SignatureOffset = 510, EntryCount = 4;

    public MasterBootRecord(MbrEntry[] entries) => Entries = entries;

    public MbrEntry[] Entries { get; }

    public bool IsProtectiveGpt => Array.Exists(Entries, e => e.Type == MbrEntry.TypeGptProtective);

    /// <summary>The entries of a sector, or null when it has no boot signature.</summary>
    public static MasterBootRecord? Parse(ReadOnlySpan<byte> sector)
    {
        if (sector.Length < SectorSize || sector[SignatureOffset] != 0x55 || sector[SignatureOffset + 1] != 0xAA) return null;
        var e = new MbrEntry[EntryCount];
        for (int i = 0; i < EntryCount; i++) e[i] = MbrEntry.Parse(sector.Slice(EntriesOffset + i * MbrEntry.Size, MbrEntry.Size));
        return new MasterBootRecord(e);
    }

    public void WriteTo(Span<byte> sector)
    {
        sector[EntriesOffset..SectorSize].Clear();
        for (int i = 0; i < EntryCount; i++) Entries[i].WriteTo(sector.Slice(EntriesOffset + i * MbrEntry.Size, MbrEntry.Size));
        sector[SignatureOffset] = 0x55;
        sector[SignatureOffset + 1] = 0xAA;
    }
}
