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

    private List<(long Offset, long Length)> LoadProfile() => _profile =
        _metadata.Regions.Profile.Length == 0 ? new() : PrefetchProfile.Parse(_metadata.ReadProfile(), Header.BackingSize, Path);

    /// <summary>Starts recording which backing ranges are read (first read of each block only).</summary>
    public void StartProfileRecording() => _recorder ??= new ProfileRecorder(Header.BackingSize, _blockShift);

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
        if (!Header.HasBacking) throw new FvdException(FvdErrorKind.InvalidArgument, "image has no backing; a prefetch profile needs one", Path);
        foreach (var (o, l) in entries)
            if (o < 0 || l <= 0 || o >= Header.BackingSize || l > Header.BackingSize - o)
                throw new FvdException(FvdErrorKind.InvalidArgument, $"profile range [{o}, +{l}) is outside the backing ({Header.BackingSize} bytes)", Path);
        _metadata.WriteProfile(PrefetchProfile.Serialize(entries));
        _profile = new List<(long, long)>(entries);
    }

    /// <summary>
    /// Turns a list of reads (an access log) into a profile: the backing blocks they touch, each once, in
    /// first-read order, merged where adjacent, ending at the backing's end. Reads past the backing are dropped.
    /// </summary>
    public List<(long Offset, long Length)> BuildProfile(IEnumerable<(long Offset, long Length)> reads)
    {
        var rec = new ProfileRecorder(Header.BackingSize, _blockShift);
        foreach (var (o, l) in reads)
            if (o >= 0 && o < Header.BackingSize && l > 0) rec.Record(o, Math.Min(l, Header.BackingSize - o));
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
