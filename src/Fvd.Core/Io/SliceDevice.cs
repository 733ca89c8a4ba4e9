namespace Fvd.Core.Io;

/// <summary>A window [start, start+length) of another device, e.g. the data area inside a metadata file.</summary>
public sealed class SliceDevice : IBlockDevice
{
    private readonly IBlockDevice _inner;
    private readonly long _start;

    public SliceDevice(IBlockDevice inner, long start, long length)
    {
        DeviceChecks.Range(inner, start, length);
        _inner = inner;
        _start = start;
        Length = length;
    }

    public long Length { get; }
    public bool IsReadOnly => _inner.IsReadOnly;

    public void Read(long offset, Span<byte> buffer)
    {
        DeviceChecks.Range(this, offset, buffer.Length);
        _inner.Read(_start + offset, buffer);
    }

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        DeviceChecks.Range(this, offset, buffer.Length);
        _inner.Write(_start + offset, buffer);
    }

    public void Flush() => _inner.Flush();

    public void Discard(long offset, long length)
    {
        DeviceChecks.Range(this, offset, length);
        _inner.Discard(_start + offset, length);
    }

    public void WriteZeroes(long offset, long length)
    {
        DeviceChecks.Range(this, offset, length);
        _inner.WriteZeroes(_start + offset, length);
    }

    public Extent GetExtent(long offset, long maxLength)
    {
        DeviceChecks.Range(this, offset, 1);
        var e = _inner.GetExtent(_start + offset, Math.Min(maxLength, Length - offset));
        return e with { Offset = offset };
    }

    /// <summary>The slice does not own its inner device.</summary>
    public void Dispose() { }
}
