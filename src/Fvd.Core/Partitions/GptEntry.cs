using System.Buffers.Binary;
using System.Text;

namespace Fvd.Core.Partitions;

/// <summary>One GPT partition entry (UEFI spec 5.3.3); the first 128 bytes of each EntrySize slot.</summary>
public readonly record struct GptEntry(Guid Type, Guid Unique, ulong FirstLba, ulong LastLba, ulong Attributes, string Name)
{
    public const int Size = 128;
    public const int TypeOffset = 0, UniqueOffset = 16, FirstLbaOffset = 32, LastLbaOffset = 40, AttributesOffset = 48,
        NameOffset = 56, NameBytes = 72;

    public bool IsUnused => Type == Guid.Empty;

    public static GptEntry Parse(ReadOnlySpan<byte> b)
    {
        var name = b.Slice(NameOffset, NameBytes);
        int len = 0;
        while (len + 1 < NameBytes && (name[len] | name[len + 1]) != 0) len += 2;
        return new GptEntry(new Guid(b.Slice(TypeOffset, 16)), new Guid(b.Slice(UniqueOffset, 16)),
            BinaryPrimitives.ReadUInt64LittleEndian(b[FirstLbaOffset..]), BinaryPrimitives.ReadUInt64LittleEndian(b[LastLbaOffset..]),
            BinaryPrimitives.ReadUInt64LittleEndian(b[AttributesOffset..]), Encoding.Unicode.GetString(name[..len]));
    }

    public void WriteTo(Span<byte> b)
    {
        b[..Size].Clear();
        Type.TryWriteBytes(b.Slice(TypeOffset, 16));
        Unique.TryWriteBytes(b.Slice(UniqueOffset, 16));
        BinaryPrimitives.WriteUInt64LittleEndian(b[FirstLbaOffset..], FirstLba);
        BinaryPrimitives.WriteUInt64LittleEndian(b[LastLbaOffset..], LastLba);
        BinaryPrimitives.WriteUInt64LittleEndian(b[AttributesOffset..], Attributes);
        var name = Encoding.Unicode.GetBytes(Name ?? ""); // default(GptEntry) is an unused slot with no name
        name.AsSpan(0, Math.Min(name.Length, NameBytes)).CopyTo(b.Slice(NameOffset, NameBytes));
    }
}
