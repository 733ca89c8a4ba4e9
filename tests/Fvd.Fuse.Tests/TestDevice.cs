using Fvd.Core;
using Fvd.Core.Io;

namespace Fvd.Fuse.Tests;

/// <summary>A memory device that tracks which 4 KiB blocks hold data (for extents) and counts calls.</summary>
internal sealed class TestDevice : IBlockDevice
{
    private const int Block = 4096;
    private readonly MemoryDevice _mem;
    private readonly bool[] _data;

    public TestDevice(int length, bool readOnly = false)
    {
        _mem = new MemoryDevice(length, readOnly);
        _data = new bool[(length + Block - 1) / Block];
    }

    public byte[] Bytes => _mem.Bytes;
    public int Flushes, Discards, Zeroes, Writes;
    /// <summary>How many writes had completed when the last Flush ran (0 before any flush).</summary>
    public int WritesAtLastFlush;
    public Exception? FailWith;

    public long Length => _mem.Length;
    public bool IsReadOnly => _mem.IsReadOnly;

    public void Read(long offset, Span<byte> buffer) { Fail(); _mem.Read(offset, buffer); }

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        Fail();
        _mem.Write(offset, buffer);
        Mark(offset, buffer.Length, true);
        Interlocked.Increment(ref Writes);
    }

    public void Flush() { Fail(); Interlocked.Increment(ref Flushes); WritesAtLastFlush = Volatile.Read(ref Writes); }

    public void Discard(long offset, long length)
    {
        Fail();
        Discards++;
        _mem.Discard(offset, length);
        // Only whole blocks become holes, as in a file system.
        long first = (offset + Block - 1) / Block, end = (offset + length) / Block;
        for (long b = first; b < end; b++) _data[b] = false;
    }

    public void WriteZeroes(long offset, long length) { Fail(); Zeroes++; _mem.WriteZeroes(offset, length); }

    public Extent GetExtent(long offset, long maxLength)
    {
        DeviceChecks.Range(this, offset, 1);
        long end = Math.Min(Length, offset + maxLength);
        bool kind = _data[offset / Block];
        long pos = (offset / Block + 1) * Block;
        while (pos < end && _data[pos / Block] == kind) pos += Block;
        pos = Math.Min(pos, end);
        return new Extent(kind ? ExtentKind.Data : ExtentKind.Zero, offset, pos - offset);
    }

    private void Mark(long offset, long length, bool value)
    {
        if (length == 0) return;
        for (long b = offset / Block; b <= (offset + length - 1) / Block; b++) _data[b] = value;
    }

    private void Fail()
    {
        if (FailWith is { } e) throw e;
    }

    public void Dispose() { }
}
