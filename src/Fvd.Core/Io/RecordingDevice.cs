// A decorator that records every operation on the device it wraps, in order, and can call a hook before
// each one (tests: "a copy-on-write wrote exactly one block", "the data was flushed before the bitmap bit").
// (docs/architecture.md §7: crash tests at the device layer).
namespace Fvd.Core.Io;

public enum RecordedOp { Read, Write, Flush, Discard, WriteZeroes }

public readonly record struct RecordedOperation(long Sequence, RecordedOp Op, long Offset, long Length);

public sealed class RecordingDevice : IBlockDevice
{
    private readonly IBlockDevice _inner;
    private readonly bool _ownsInner;
    private readonly List<RecordedOperation> _ops = new();
    private long _sequence;

    public RecordingDevice(IBlockDevice inner, bool ownsInner = true)
    {
        _inner = inner;
        _ownsInner = ownsInner;
    }

    public IBlockDevice Inner => _inner;

    /// <summary>Called (under no lock) before each operation is passed on; may throw to inject a failure.</summary>
    public Action<RecordedOperation>? Before { get; set; }

    /// <summary>Called after each operation completed successfully.</summary>
    public Action<RecordedOperation>? After { get; set; }

    /// <summary>Record reads too (off by default: reads are many and rarely interesting).</summary>
    public bool RecordReads { get; set; }

    public long Length => _inner.Length;
    public bool IsReadOnly => _inner.IsReadOnly;

    /// <summary>A snapshot of the operations so far.</summary>
    public RecordedOperation[] Operations
    {
        get { lock (_ops) return _ops.ToArray(); }
    }

    public void Clear()
    {
        lock (_ops) _ops.Clear();
    }

    private RecordedOperation Begin(RecordedOp op, long offset, long length)
    {
        var r = new RecordedOperation(Interlocked.Increment(ref _sequence), op, offset, length);
        if (op != RecordedOp.Read || RecordReads)
            lock (_ops) _ops.Add(r);
        Before?.Invoke(r);
        return r;
    }

    public void Read(long offset, Span<byte> buffer)
    {
        var r = Begin(RecordedOp.Read, offset, buffer.Length);
        _inner.Read(offset, buffer);
        After?.Invoke(r);
    }

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        var r = Begin(RecordedOp.Write, offset, buffer.Length);
        _inner.Write(offset, buffer);
        After?.Invoke(r);
    }

    public void Flush()
    {
        var r = Begin(RecordedOp.Flush, 0, 0);
        _inner.Flush();
        After?.Invoke(r);
    }

    public void Discard(long offset, long length)
    {
        var r = Begin(RecordedOp.Discard, offset, length);
        _inner.Discard(offset, length);
        After?.Invoke(r);
    }

    public void WriteZeroes(long offset, long length)
    {
        var r = Begin(RecordedOp.WriteZeroes, offset, length);
        _inner.WriteZeroes(offset, length);
        After?.Invoke(r);
    }

    public Extent GetExtent(long offset, long maxLength) => _inner.GetExtent(offset, maxLength);

    public void Dispose()
    {
        if (_ownsInner) _inner.Dispose();
    }
}
