// Prefetch and copy-on-read settings stored in the header (bytes 96..127), paper section 3.4.
using System.Buffers.Binary;

namespace Fvd.Core.Format;

public sealed record PrefetchSettings
{
    public const int Size = 32;

    /// <summary>Seconds after open before whole-image prefetch starts; -1 = never.</summary>
    public int StartDelaySeconds { get; init; } = -1;
    /// <summary>Bytes per prefetch read; 0 = default (1 MiB).</summary>
    public int ChunkBytes { get; init; }
    public int MinReadKiBps { get; init; } = 5120;
    public int MaxReadKiBps { get; init; }
    public int MinWriteKiBps { get; init; } = 5120;
    public int MaxWriteKiBps { get; init; }
    public int ThrottleMs { get; init; } = 30_000;
    public int MaxOutstandingCorBytes { get; init; } = 2_000_000;

    public static PrefetchSettings Default { get; } = new();

    public void WriteTo(Span<byte> d)
    {
        BinaryPrimitives.WriteInt32LittleEndian(d[0..], StartDelaySeconds);
        BinaryPrimitives.WriteInt32LittleEndian(d[4..], ChunkBytes);
        BinaryPrimitives.WriteInt32LittleEndian(d[8..], MinReadKiBps);
        BinaryPrimitives.WriteInt32LittleEndian(d[12..], MaxReadKiBps);
        BinaryPrimitives.WriteInt32LittleEndian(d[16..], MinWriteKiBps);
        BinaryPrimitives.WriteInt32LittleEndian(d[20..], MaxWriteKiBps);
        BinaryPrimitives.WriteInt32LittleEndian(d[24..], ThrottleMs);
        BinaryPrimitives.WriteInt32LittleEndian(d[28..], MaxOutstandingCorBytes);
    }

    public static PrefetchSettings Read(ReadOnlySpan<byte> s) => new()
    {
        StartDelaySeconds = BinaryPrimitives.ReadInt32LittleEndian(s[0..]),
        ChunkBytes = BinaryPrimitives.ReadInt32LittleEndian(s[4..]),
        MinReadKiBps = BinaryPrimitives.ReadInt32LittleEndian(s[8..]),
        MaxReadKiBps = BinaryPrimitives.ReadInt32LittleEndian(s[12..]),
        MinWriteKiBps = BinaryPrimitives.ReadInt32LittleEndian(s[16..]),
        MaxWriteKiBps = BinaryPrimitives.ReadInt32LittleEndian(s[20..]),
        ThrottleMs = BinaryPrimitives.ReadInt32LittleEndian(s[24..]),
        MaxOutstandingCorBytes = BinaryPrimitives.ReadInt32LittleEndian(s[28..]),
    };

    public void Validate(int blockSize, string? path)
    {
        static FvdException Bad(string? p, string m) => new(FvdErrorKind.InvalidFormat, m, p);
        if (StartDelaySeconds < -1) throw Bad(path, $"prefetch start delay {StartDelaySeconds} is negative");
        if (ChunkBytes < 0 || ChunkBytes > 64 << 20 || (ChunkBytes != 0 && ChunkBytes % blockSize != 0))
            throw Bad(path, $"prefetch chunk {ChunkBytes} is not a multiple of the block size up to 64 MiB");
        if (MinReadKiBps < 0 || MaxReadKiBps < 0 || MinWriteKiBps < 0 || MaxWriteKiBps < 0)
            throw Bad(path, "negative prefetch throughput limit");
        if (ThrottleMs < 0 || ThrottleMs > 3_600_000) throw Bad(path, $"prefetch throttle {ThrottleMs} ms out of range");
        if (MaxOutstandingCorBytes < 0 || MaxOutstandingCorBytes > 1 << 30)
            throw Bad(path, $"copy-on-read limit {MaxOutstandingCorBytes} out of range");
    }
}
