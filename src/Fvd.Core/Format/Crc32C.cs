using System.Buffers.Binary;
using System.Numerics;

namespace Fvd.Core.Format;

/// <summary>CRC-32C (Castagnoli) with the usual ~0 initial value and final XOR, on the hardware instruction.</summary>
public static class Crc32C
{
    public static uint Compute(ReadOnlySpan<byte> data)
    {
        uint crc = ~0u;
        while (data.Length >= 8)
        {
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }
        foreach (byte b in data) crc = BitOperations.Crc32C(crc, b);
        return ~crc;
    }
}
