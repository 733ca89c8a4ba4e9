// The one I/O interface: offset-based and stateless (no position), so one instance serves many threads.
// Files, memory, test decorators and an FVD image itself all implement it, and one contract test class
// checks them all (tests/Fvd.Core.Tests/BlockDeviceContract.cs).
namespace Fvd.Core.Io;

/// <summary>What a range of a device holds, as far as the device knows.</summary>
public enum ExtentKind
{
    /// <summary>Allocated, possibly non-zero data.</summary>
    Data,
    /// <summary>Reads as zeros (a hole, or known-zero).</summary>
    Zero,
}

public readonly record struct Extent(ExtentKind Kind, long Offset, long Length)
{
    public long End => Offset + Length;
}

public interface IBlockDevice : IDisposable
{
    /// <summary>Size in bytes.</summary>
    long Length { get; }

    bool IsReadOnly { get; }

    /// <summary>Reads exactly buffer.Length bytes at offset; the range must lie inside the device.</summary>
    void Read(long offset, Span<byte> buffer);

    /// <summary>Writes all of buffer at offset; the range must lie inside the device.</summary>
    void Write(long offset, ReadOnlySpan<byte> buffer);

    /// <summary>Returns when every earlier completed write is durable.</summary>
    void Flush();

    /// <summary>Deallocates a range where possible; afterwards it reads as zeros.</summary>
    void Discard(long offset, long length);

    /// <summary>Makes a range read as zeros (may allocate).</summary>
    void WriteZeroes(long offset, long length);

    /// <summary>
    /// The extent that starts at offset (offset &lt; Length), of one kind, at most maxLength long.
    /// A device that cannot tell reports Data.
    /// </summary>
    Extent GetExtent(long offset, long maxLength);
}
