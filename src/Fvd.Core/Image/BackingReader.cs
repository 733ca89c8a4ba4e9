// Reads of the backing image: bytes past the backing's end (the last block's tail) read as zeros; every
// read is counted, and a guest's reads (not prefetch's) go to the profile recorder when one runs.
using Fvd.Core.Io;

namespace Fvd.Core.Image;

/// <summary>Bytes moved by the background work, shown by Status.</summary>
internal sealed class ImageCounters
{
    public long BackingBytesRead;
    public long CopyOnReadBytesSaved;
    public long PrefetchBytesSaved;
}

internal sealed class BackingReader(IBlockDevice? backing, long backingSize, string displayPath, ImageCounters counters) : IDisposable
{
    private ProfileRecorder? _recorder;

    /// <summary>The backing device; null when it is not available (AllowMissingBacking).</summary>
    public IBlockDevice? Device => backing;

    /// <summary>Starts recording which backing ranges a guest reads (first read of each block only).</summary>
    public ProfileRecorder StartRecording(int blockShift)
    {
        Interlocked.CompareExchange(ref _recorder, new ProfileRecorder(backingSize, blockShift), null);
        return _recorder!;
    }

    public ProfileRecorder? Recorder => Volatile.Read(ref _recorder);

    /// <summary>Reads backing content for [pos, pos+dst.Length); the part past the backing's end is zeros.</summary>
    public void Read(long pos, Span<byte> dst, bool prefetch = false)
    {
        long inBacking = Math.Clamp(backingSize - pos, 0, dst.Length);
        if (inBacking > 0)
        {
            if (backing is null)
                throw new FvdException(FvdErrorKind.NotFound, "backing file is not available", displayPath);
            backing.Read(pos, dst[..(int)inBacking]);
            Interlocked.Add(ref counters.BackingBytesRead, inBacking);
            if (!prefetch) _recorder?.Record(pos, inBacking); // a profile records what the guest needs
        }
        dst[(int)inBacking..].Clear();
    }

    public void Dispose() => backing?.Dispose();
}
