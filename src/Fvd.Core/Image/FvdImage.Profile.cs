// Profile-directed prefetch (paper 3.4.1): record the backing ranges a boot reads, store them in the
// image, and let prefetch fetch those first.
using Fvd.Core.Format;

namespace Fvd.Core.Image;

public sealed partial class FvdImage
{
    private ProfileRecorder? _recorder;
    private List<(long Offset, long Length)>? _profile;

    /// <summary>The stored prefetch profile (empty when none).</summary>
    public IReadOnlyList<(long Offset, long Length)> PrefetchProfileEntries => _profile ?? LoadProfile();

    private List<(long Offset, long Length)> LoadProfile()
    {
        if ((_header.Compatible & CompatibleFeatures.PrefetchProfile) == 0) return _profile = new();
        var (off, len) = _header.ReservedRegions[FvdHeader.ProfileRegion];
        var buf = new byte[len];
        _meta.Read(off, buf);
        return _profile = PrefetchProfile.Parse(buf, _header.BackingSize, Path);
    }

    /// <summary>Starts recording which backing ranges are read (first read of each block only).</summary>
    public void StartProfileRecording() => _recorder ??= new ProfileRecorder(_header.BackingSize, _blockShift);

    /// <summary>The ranges recorded so far, in first-read order, merged where adjacent.</summary>
    public List<(long Offset, long Length)> RecordedProfile() => _recorder?.Entries() ?? new();

    /// <summary>
    /// Stores a profile in the image (replacing any earlier one): written after the end of the other
    /// metadata, made durable, then the header names it.
    /// </summary>
    public void WriteProfile(IReadOnlyList<(long Offset, long Length)> entries)
    {
        ThrowIfDisposed();
        if (IsReadOnly) throw new FvdException(FvdErrorKind.ReadOnly, "image is open read-only", Path);
        if (!_header.HasBacking) throw new FvdException(FvdErrorKind.InvalidArgument, "image has no backing; a prefetch profile needs one", Path);
        foreach (var (o, l) in entries)
            if (o < 0 || l <= 0 || o >= _header.BackingSize || l > _header.BackingSize - o)
                throw new FvdException(FvdErrorKind.InvalidArgument, $"profile range [{o}, +{l}) is outside the backing ({_header.BackingSize} bytes)", Path);
        var bytes = PrefetchProfile.Serialize(entries);
        lock (_flushLock)
        {
            ThrowIfSyncFailed();
            long start = _header.InlineData ? FvdHeader.AlignUp(_header.DataOffset + _header.VirtualSize, 4096)
                : (_header.BitmapLength == 0 ? _header.HeaderArea : FvdHeader.AlignUp(_header.BitmapOffset + _header.BitmapLength, 4096));
            if (_meta is Io.FileDevice f && f.Length < start + bytes.Length) f.SetLength(start + bytes.Length);
            _meta.Write(start, bytes);
            Sync(_meta, "metadata sync");
            var regions = (ValueTuple<long, long>[])_header.ReservedRegions.Clone();
            regions[FvdHeader.ProfileRegion] = (start, bytes.Length);
            WriteHeader(_header with { Compatible = _header.Compatible | CompatibleFeatures.PrefetchProfile, ReservedRegions = regions });
            _profile = new List<(long, long)>(entries);
        }
    }

    /// <summary>
    /// Turns a list of reads (an access log) into a profile: the backing blocks they touch, each once, in
    /// first-read order, merged where adjacent, ending at the backing's end. Reads past the backing are dropped.
    /// </summary>
    public List<(long Offset, long Length)> BuildProfile(IEnumerable<(long Offset, long Length)> reads)
    {
        var rec = new ProfileRecorder(_header.BackingSize, _blockShift);
        foreach (var (o, l) in reads)
            if (o >= 0 && o < _header.BackingSize && l > 0) rec.Record(o, Math.Min(l, _header.BackingSize - o));
        return rec.Entries();
    }

    /// <summary>Called on every backing read.</summary>
    private void RecordBackingRead(long pos, long len) => _recorder?.Record(pos, len);

    /// <summary>
    /// Remembers which blocks of the backing were read first. Entries end at the backing's end, not at the
    /// end of its last block: a template whose size is not a multiple of the block size (a GPT disk, with
    /// its backup header in the last sector) would otherwise give a profile the image refuses to store.
    /// </summary>
    private sealed class ProfileRecorder(long backingSize, int shift)
    {
        private readonly Bitmap _seen = new(FvdHeader.CeilDiv(backingSize, 1L << shift));
        private readonly List<long> _order = new();
        private readonly object _lock = new();

        public void Record(long pos, long len)
        {
            long first = pos >> shift, last = Math.Min(_seen.Blocks - 1, (pos + len - 1) >> shift);
            lock (_lock)
            {
                for (long b = first; b <= last; b++)
                {
                    if (_seen.Get(b) || _order.Count >= PrefetchProfile.MaxEntries) continue;
                    _seen.SetRange(b, 1);
                    _order.Add(b);
                }
            }
        }

        public List<(long, long)> Entries()
        {
            var list = new List<(long Offset, long Length)>();
            lock (_lock)
            {
                foreach (long b in _order)
                {
                    long off = b << shift, len = Math.Min(1L << shift, backingSize - off);
                    if (list.Count > 0 && list[^1].Offset + list[^1].Length == off) list[^1] = (list[^1].Offset, list[^1].Length + len);
                    else list.Add((off, len));
                }
            }
            return list;
        }
    }
}
