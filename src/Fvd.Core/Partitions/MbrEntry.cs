using System.Buffers.Binary;

namespace Fvd.Core.Partitions;

/// <summary>One 16-byte partition entry of an MBR or EBR (CHS fields are ignored: LBA only).</summary>
public readonly record struct MbrEntry(byte Status, byte Type, uint FirstLba, uint SectorCount)
{
    public const int Size = 16;
    public const int StatusOffset = 0, TypeOffset = 4, FirstLbaOffset = 8, SectorCountOffset = 12;

    public const byte TypeEmpty = 0x00, TypeGptProtective = 0xEE;

    /// <summary>DOS extended (CHS), Windows extended (LBA), Linux extended: containers of an EBR chain.</summary>
    public bool IsExtended => Type is 0x05 or 0x0F or 0x85;
    public bool IsEmpty => Type == TypeEmpty;

    public static MbrEntry Parse(ReadOnlySpan<byte> b) => new(
        b[StatusOffset], b[TypeOffset],
        BinaryPrimitives.ReadUInt32LittleEndian(b[FirstLbaOffset..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[SectorCountOffset..]));

    public void WriteTo(Span<byte> b)
    {
        b[..Size].Clear();
        b[StatusOffset] = Status;
        b[TypeOffset] = Type;
        BinaryPrimitives.WriteUInt32LittleEndian(b[FirstLbaOffset..], FirstLba);
        BinaryPrimitives.WriteUInt32LittleEndian(b[SectorCountOffset..], SectorCount);
    }
}
