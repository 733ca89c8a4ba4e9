namespace Fvd.Core.Io;

/// <summary>A device in memory, for tests and simulators. Thread-safe for non-overlapping requests.</summary>
public sealed class MemoryDevice : IBlockDevice
{
    private readonly byte[] _data;

    public MemoryDevice(long length, bool readOnly = false) : this(new byte[checked((int)length)], readOnly) { }

    public MemoryDevice(byte[] data, bool readOnly = false)
    {
        _data = data;
        IsReadOnly = readOnly;
    }

    public byte[] Bytes => _data;
    public long Length => _data.Length;
    public bool IsReadOnly { get; }

    public void Read(long offset, Span<byte> buffer)
    {
        DeviceChecks.Range(this, offset, buffer.Length);
        _data.AsSpan((int)offset, buffer.Length).CopyTo(buffer);
    }

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        DeviceChecks.Writable(this);
        DeviceChecks.Range(this, offset, buffer.Length);
        buffer.CopyTo(_data.AsSpan((int)offset));
    }

    public void Flush() { }

    public void Discard(long offset, long length) => WriteZeroes(offset, length);

    public void WriteZeroes(long offset, long length)
    {
        DeviceChecks.Writable(this);
        DeviceChecks.Range(this, offset, length);
        _data.AsSpan((int)offset, (int)length).Clear();
    }

    public Extent GetExtent(long offset, long maxLength)
    {
        DeviceChecks.Range(this, offset, 1);
        long len = Math.Min(maxLength, Length - offset);
        return new Extent(ExtentKind.Data, offset, len);
    }

    public void Dispose() { }
}
