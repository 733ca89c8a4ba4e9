namespace Fvd.Core.Partitions;

/// <summary>
/// CRC-32/ISO-HDLC (reflected polynomial 0xEDB88320, ~0 in and out), the checksum of GPT headers and entry
/// arrays. Not CRC-32C (Format/Crc32C.cs): the BCL has an instruction only for that one.
/// </summary>
public static class Crc32
{
    private static readonly uint[] Table = BuildTable();

    public static uint Compute(ReadOnlySpan<byte> data)
    {
        uint crc = ~0u;
        foreach (byte b in data) crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return ~crc;
    }

    private static uint[] BuildTable()
    {
        var t = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }
}
