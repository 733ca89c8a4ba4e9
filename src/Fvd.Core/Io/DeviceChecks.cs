namespace Fvd.Core.Io;

/// <summary>Range checks shared by every device, so each reports the same error for the same mistake.</summary>
public static class DeviceChecks
{
    public static void Range(IBlockDevice dev, long offset, long length, string? path = null)
    {
        if (offset < 0 || length < 0 || offset > dev.Length || length > dev.Length - offset)
            throw new FvdException(FvdErrorKind.OutOfBounds,
                $"request [{offset}, +{length}) outside device of {dev.Length} bytes", path);
    }

    public static void Writable(IBlockDevice dev, string? path = null)
    {
        if (dev.IsReadOnly) throw new FvdException(FvdErrorKind.ReadOnly, "device is read-only", path);
    }

    /// <summary>Shared zero buffer for writing zeros in chunks (never written to).</summary>
    internal static readonly byte[] Zeros = new byte[1 << 20];

    /// <summary>Writes zeros with plain writes, in 1 MiB pieces, for devices without a better way.</summary>
    public static void WriteZeroesByWrites(IBlockDevice dev, long offset, long length)
    {
        while (length > 0)
        {
            int n = (int)Math.Min(length, Zeros.Length);
            dev.Write(offset, Zeros.AsSpan(0, n));
            offset += n;
            length -= n;
        }
    }

    /// <summary>True when every byte is zero (vectorized).</summary>
    public static bool IsZero(ReadOnlySpan<byte> data) => data.IndexOfAnyExcept((byte)0) < 0;
}
