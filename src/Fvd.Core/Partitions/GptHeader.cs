using System.Buffers.Binary;

namespace Fvd.Core.Partitions;

/// <summary>The GPT header (UEFI spec 5.3.2) at LBA 1, its backup at the disk's last LBA.</summary>
public sealed record GptHeader
{
    public const int MinSize = 92;
    public const ulong SignatureValue = 0x5452415020494645; // "EFI PART"
    public const int SignatureOffset = 0, RevisionOffset = 8, HeaderSizeOffset = 12, HeaderCrcOffset = 16,
        MyLbaOffset = 24, AlternateLbaOffset = 32, FirstUsableOffset = 40, LastUsableOffset = 48, DiskGuidOffset = 56,
        EntriesLbaOffset = 72, EntryCountOffset = 80, EntrySizeOffset = 84, EntriesCrcOffset = 88;

    public ulong Signature { get; init; }
    public uint Revision { get; init; }
    public uint HeaderSize { get; init; }
    public uint HeaderCrc { get; init; }
    public ulong MyLba { get; init; }
    public ulong AlternateLba { get; init; }
    public ulong FirstUsableLba { get; init; }
    public ulong LastUsableLba { get; init; }
    public Guid DiskGuid { get; init; }
    public ulong EntriesLba { get; init; }
    public uint EntryCount { get; init; }
    public uint EntrySize { get; init; }
    public uint EntriesCrc { get; init; }

    /// <summary>Fields as stored; nothing is validated here (see <see cref="Check"/>).</summary>
    public static GptHeader Parse(ReadOnlySpan<byte> b) => new()
    {
        Signature = BinaryPrimitives.ReadUInt64LittleEndian(b[SignatureOffset..]),
        Revision = BinaryPrimitives.ReadUInt32LittleEndian(b[RevisionOffset..]),
        HeaderSize = BinaryPrimitives.ReadUInt32LittleEndian(b[HeaderSizeOffset..]),
        HeaderCrc = BinaryPrimitives.ReadUInt32LittleEndian(b[HeaderCrcOffset..]),
        MyLba = BinaryPrimitives.ReadUInt64LittleEndian(b[MyLbaOffset..]),
        AlternateLba = BinaryPrimitives.ReadUInt64LittleEndian(b[AlternateLbaOffset..]),
        FirstUsableLba = BinaryPrimitives.ReadUInt64LittleEndian(b[FirstUsableOffset..]),
        LastUsableLba = BinaryPrimitives.ReadUInt64LittleEndian(b[LastUsableOffset..]),
        DiskGuid = new Guid(b.Slice(DiskGuidOffset, 16)),
        EntriesLba = BinaryPrimitives.ReadUInt64LittleEndian(b[EntriesLbaOffset..]),
        EntryCount = BinaryPrimitives.ReadUInt32LittleEndian(b[EntryCountOffset..]),
        EntrySize = BinaryPrimitives.ReadUInt32LittleEndian(b[EntrySizeOffset..]),
        EntriesCrc = BinaryPrimitives.ReadUInt32LittleEndian(b[EntriesCrcOffset..]),
    };

    /// <summary>Writes the 92 bytes with the CRC computed over them (HeaderSize must be 92).</summary>
    public void WriteTo(Span<byte> b)
    {
        b[..MinSize].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(b[SignatureOffset..], Signature);
        BinaryPrimitives.WriteUInt32LittleEndian(b[RevisionOffset..], Revision);
        BinaryPrimitives.WriteUInt32LittleEndian(b[HeaderSizeOffset..], HeaderSize);
        BinaryPrimitives.WriteUInt64LittleEndian(b[MyLbaOffset..], MyLba);
        BinaryPrimitives.WriteUInt64LittleEndian(b[AlternateLbaOffset..], AlternateLba);
        BinaryPrimitives.WriteUInt64LittleEndian(b[FirstUsableOffset..], FirstUsableLba);
        BinaryPrimitives.WriteUInt64LittleEndian(b[LastUsableOffset..], LastUsableLba);
        DiskGuid.TryWriteBytes(b.Slice(DiskGuidOffset, 16));
        BinaryPrimitives.WriteUInt64LittleEndian(b[EntriesLbaOffset..], EntriesLba);
        BinaryPrimitives.WriteUInt32LittleEndian(b[EntryCountOffset..], EntryCount);
        BinaryPrimitives.WriteUInt32LittleEndian(b[EntrySizeOffset..], EntrySize);
        BinaryPrimitives.WriteUInt32LittleEndian(b[EntriesCrcOffset..], EntriesCrc);
        BinaryPrimitives.WriteUInt32LittleEndian(b[HeaderCrcOffset..], Crc32.Compute(b[..(int)HeaderSize]));
    }

    /// <summary>
    /// Null when the header read at <paramref name="lba"/> of a disk of <paramref name="sectors"/> sectors is
    /// usable, else why not. <paramref name="sector"/> is the raw sector (the CRC covers HeaderSize bytes of it
    /// with the CRC field zeroed).
    /// </summary>
    public string? Check(ReadOnlySpan<byte> sector, ulong lba, ulong sectors, int maxEntryBytes)
    {
        if (Signature != SignatureValue) return "no GPT signature";
        if (HeaderSize < MinSize || HeaderSize > sector.Length) return $"header size {HeaderSize} is invalid";
        Span<byte> copy = stackalloc byte[(int)HeaderSize];
        sector[..(int)HeaderSize].CopyTo(copy);
        BinaryPrimitives.WriteUInt32LittleEndian(copy[HeaderCrcOffset..], 0);
        if (Crc32.Compute(copy) != HeaderCrc) return "header CRC mismatch";
        if (MyLba != lba) return $"header says it is at LBA {MyLba}, read at {lba}";
        if (EntrySize < 128 || EntrySize > 4096 || EntrySize % 8 != 0) return $"entry size {EntrySize} is invalid";
        if ((ulong)EntryCount * EntrySize > (ulong)maxEntryBytes) return $"{EntryCount} entries of {EntrySize} bytes are too many";
        ulong arraySectors = ((ulong)EntryCount * EntrySize + 511) / 512;
        if (EntriesLba < 1 || EntriesLba >= sectors || arraySectors > sectors - EntriesLba) return "entry array lies outside the disk";
        if (FirstUsableLba > LastUsableLba || LastUsableLba >= sectors) return "usable range lies outside the disk";
        return null;
    }
}
