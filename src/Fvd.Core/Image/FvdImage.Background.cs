// Background work of a mounted image: copy-on-read and prefetch (paper 3.3.4, 3.4). Tools do not start it
// (the paper: no prefetch inside qemu tools); the FUSE daemon does.
using Fvd.Core.Format;
using Fvd.Core.Io;

namespace Fvd.Core.Image;

public sealed partial class FvdImage
{
    private Prefetcher? _prefetcher;

    /// <summary>
    /// Starts copy-on-read (per the header's flag unless overridden) and prefetch (when the header's start
    /// delay, or the override, is >= 0). No-op without a backing or when read-only or finished; an image
    /// whose blocks all became local earlier (guest writes, copy-on-read) is finished here instead.
    /// </summary>
    public void StartBackgroundWork(bool? copyOnRead = null, PrefetchSettings? prefetch = null)
    {
        ThrowIfDisposed();
        if (IsReadOnly || _backing is null || AllLocal) return;
        FinishIfAllLocal();
        if (AllLocal) return;
        EnableCopyOnRead(copyOnRead ?? (Header.Flags & HeaderFlags.CopyOnRead) != 0);
        var s = prefetch ?? Header.Prefetch;
        if (s.StartDelaySeconds >= 0 && _prefetcher is null) _prefetcher = new Prefetcher(this, s);
    }

    /// <summary>The last prefetch error, if prefetch stopped on one.</summary>
    public string? PrefetchError => _prefetcher?.Error;

    /// <summary>Reads backing content for prefetch (counted like any backing read).</summary>
    internal void ReadBackingForPrefetch(long pos, Span<byte> dst) => ReadBacking(pos, dst, prefetch: true);

    internal void AddPrefetchSaved(long n) => Interlocked.Add(ref _prefetchBytesSaved, n);

    /// <summary>
    /// Runs prefetch to the end in the calling thread's time (fvd-img prefetch): no start delay, the given
    /// limits, progress as (blocks local, blocks total). Returns when every block is local.
    /// </summary>
    public void PrefetchNow(PrefetchSettings? limits = null, Action<long, long>? progress = null, CancellationToken ct = default,
        Action<ImageStatus>? onStatus = null)
    {
        ThrowIfDisposed();
        if (IsReadOnly) throw new FvdException(FvdErrorKind.ReadOnly, "image is open read-only", Path);
        if (AllLocal) return;
        if (_backing is null) throw new FvdException(FvdErrorKind.NotFound, "backing file is not available", BackingPath ?? Path);
        var s = (limits ?? Header.Prefetch) with { StartDelaySeconds = 0 };
        using (var p = new Prefetcher(this, s))
        {
            _prefetcher = p;
            try
            {
                while (p.State is PrefetchState.Waiting or PrefetchState.Running or PrefetchState.Paused)
                {
                    if (ct.WaitHandle.WaitOne(100)) break;
                    progress?.Invoke(_map.CountLocal(), _map.Blocks);
                    onStatus?.Invoke(Status);
                }
            }
            finally
            {
                _prefetcher = null;
            }
            if (p.Error is not null) throw new FvdException(FvdErrorKind.Io, $"prefetch failed: {p.Error}", Path);
        }
        progress?.Invoke(_map.CountLocal(), _map.Blocks);
        onStatus?.Invoke(Status);
    }

    /// <summary>
    /// When every block is local, whether prefetch, copy-on-read or guest writes made it so: persist all
    /// bits, then set the prefetch-finished flag (paper 3.3.5). From then on the bitmap and the backing are
    /// not consulted and the data file is a plain RAW image (FUSE passthrough can serve it).
    /// </summary>
    internal void FinishIfAllLocal()
    {
        // AllBlocksLocal is cheap to call after every copy-on-read save (LinearMap.AllBlocksLocal).
        if (IsReadOnly || AllLocal || !_map.AllBlocksLocal()) return;
        Flush();
        _metadata.UpdateHeader(h => (h.Flags & HeaderFlags.PrefetchFinished) != 0 ? null : h with { Flags = h.Flags | HeaderFlags.PrefetchFinished });
        _map.MarkFinished();
        _copyOnRead = false;
    }

    private void StopBackgroundWork()
    {
        _prefetcher?.Dispose();
        _prefetcher = null;
        StopCopyOnRead();
    }

    /// <summary>
    /// Drops the backing reference of an image whose blocks are all local (prefetch finished, or every
    /// bit set): the image then stands alone, and its data file is a plain RAW image.
    /// </summary>
    public static void Detach(string path, LockWait? wait = null)
    {
        using var img = Open(path, new FvdOpenOptions { AllowMissingBacking = true, LockWait = wait ?? LockWait.Default });
        img.DetachBacking();
    }

    /// <summary>Detach's header update on an open image (tests tear it: it spans several sectors).</summary>
    internal void DetachBacking()
    {
        if (!Header.HasBacking) return;
        if (!_map.AllBlocksLocal())
            throw new FvdException(FvdErrorKind.InvalidArgument,
                $"{_map.Blocks - _map.CountLocal()} blocks still live in the backing; run 'fvd-img prefetch' first", Path);
        Flush();
        _metadata.UpdateHeader(h => h with
        {
            BackingSize = 0, BackingPath = "", BackingFormat = "", BitmapOffset = 0, BitmapLength = 0,
            Flags = h.Flags & ~(HeaderFlags.PrefetchFinished | HeaderFlags.CopyOnRead),
            Compatible = h.Compatible & ~CompatibleFeatures.PrefetchProfile,
            ReservedRegions = new (long, long)[5],
        });
    }
}
