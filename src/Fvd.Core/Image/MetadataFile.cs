// The one owner of NAME.fvd while an image is open: the current header and its slot (HeaderSlots.cs), the
// regions (MetadataRegions.cs), and the flush order (docs/architecture.md §3, man/fvd.5):
//
//   take the map's dirty metadata -> fdatasync(data) -> write the metadata -> fdatasync(metadata)
//
// A bit (or later a table entry) reaches the disk only after the data it names is durable. The data sync is
// skipped when nothing was written to the data file since the last one (an O_DSYNC write followed by the
// FSYNC the kernel sends for it costs one sync, not two).
//
// A failed sync is final: Linux reports a writeback error once, so a retry would "succeed" over data that
// never reached the disk. Every later flush and header write fails, no metadata is written for the blocks
// concerned, the image is never marked clean, and the header gets the corrupt mark (cleared by
// fvd-img check -r all).
using Fvd.Core.Format;
using Fvd.Core.Image.Mapping;
using Fvd.Core.Io;

namespace Fvd.Core.Image;

internal sealed class MetadataFile : IDisposable
{
    private readonly IBlockDevice _dev;
    private readonly string _path;
    private readonly object _lock = new(); // flushes and header writes, one at a time
    private FvdHeader _header;
    private int _slot;
    private string? _syncFailure;
    private int _dataWritten;

    public MetadataFile(IBlockDevice dev, HeaderChoice current, string path)
    {
        _dev = dev;
        _path = path;
        _header = current.Header;
        _slot = current.Slot;
        Regions = MetadataRegions.Of(_header);
    }

    public FvdHeader Header => Volatile.Read(ref _header);
    /// <summary>The regions of the current header (recomputed when a header write moves one).</summary>
    public MetadataRegions Regions { get; private set; }
    public IBlockDevice Device => _dev;

    /// <summary>Throws the sticky failure of an earlier sync.</summary>
    public void ThrowIfSyncFailed()
    {
        if (_syncFailure is not null) throw new FvdException(FvdErrorKind.Io, _syncFailure, _path);
    }

    /// <summary>
    /// Replaces the header with update(current) (into the other slot when there are two) and syncs it;
    /// update returns null when nothing is to change.
    /// </summary>
    public void UpdateHeader(Func<FvdHeader, FvdHeader?> update)
    {
        lock (_lock)
        {
            if (update(_header) is { } next) WriteHeader(next);
        }
    }

    /// <summary>Offline replacements (fvd-img resize, rebase, commit) hold this while they change regions.</summary>
    public object Gate => _lock;

    /// <summary>fdatasync of a file of this image with the failed-sync rule (offline replacements).</summary>
    public void SyncFile(IBlockDevice dev, string what) => Sync(dev, what);

    /// <summary>Writes h as the current header (an offline replacement of the whole header).</summary>
    public void ReplaceHeader(FvdHeader h)
    {
        lock (_lock) WriteHeader(h);
    }

    private void WriteHeader(FvdHeader h)
    {
        ThrowIfSyncFailed();
        var (next, slot) = HeaderSlots.Prepare(_header, _slot, h);
        _dev.Write(HeaderSlots.Offset(slot), next.ToBytes());
        Sync(_dev, "metadata sync");
        SetCurrent(next, slot);
    }

    private void SetCurrent(FvdHeader h, int slot)
    {
        Regions = MetadataRegions.Of(h);
        Volatile.Write(ref _header, h);
        _slot = slot;
    }

    /// <summary>
    /// Called after every completed write to the data file and before any metadata naming it is changed
    /// in memory, so a flush with nothing written since the last one skips the data sync.
    /// </summary>
    public void MarkDataWritten()
    {
        if (Volatile.Read(ref _dataWritten) == 0) Interlocked.Exchange(ref _dataWritten, 1);
    }

    /// <summary>Makes every completed data write durable, then the metadata that names it.</summary>
    public void Flush(IBlockDevice data, IBlockMap map)
    {
        lock (_lock)
        {
            ThrowIfSyncFailed();
            // Snapshot first: everything in it belongs to a data write that has already completed, so the
            // data sync below makes that data durable before the metadata naming it is written.
            var dirty = map.TakeDirty();
            // Taken after the snapshot: a change in it was made after its data write marked the data written.
            // No retry after a failed sync: the snapshot's metadata would then reach the disk over data that
            // never did. Only a failed metadata write (before any sync) restores it for the next flush.
            if (Interlocked.Exchange(ref _dataWritten, 0) != 0) Sync(data, "data sync");
            if (dirty.Writes.Count == 0) return;
            try
            {
                foreach (var (off, bytes, len) in dirty.Writes) _dev.Write(off, bytes.AsSpan(0, len));
            }
            catch
            {
                dirty.Restore();
                throw;
            }
            Sync(_dev, "metadata sync");
        }
    }

    /// <summary>The stored prefetch profile's bytes (empty when none).</summary>
    public byte[] ReadProfile()
    {
        var (off, len) = Regions.Profile;
        var buf = new byte[len];
        if (len > 0) _dev.Read(off, buf);
        return buf;
    }

    /// <summary>
    /// Stores a serialized profile after the other metadata (replacing any earlier one): written and made
    /// durable, then the header names it.
    /// </summary>
    public void WriteProfile(byte[] bytes)
    {
        lock (_lock)
        {
            ThrowIfSyncFailed();
            long start = Regions.FreeStart;
            if (_dev is FileDevice f && f.Length < start + bytes.Length) f.SetLength(start + bytes.Length);
            _dev.Write(start, bytes);
            Sync(_dev, "metadata sync");
            var regions = (ValueTuple<long, long>[])_header.ReservedRegions.Clone();
            regions[FvdHeader.ProfileRegion] = (start, bytes.Length);
            WriteHeader(_header with { Compatible = _header.Compatible | CompatibleFeatures.PrefetchProfile, ReservedRegions = regions });
        }
    }

    /// <summary>
    /// fdatasync of one device. On failure the error is final for this open (see the top of this file): the
    /// image is marked corrupt on disk if the metadata file still takes a write, and the failure is thrown
    /// as an I/O error (EIO to the writer).
    /// </summary>
    private void Sync(IBlockDevice dev, string what)
    {
        try
        {
            dev.Flush();
        }
        catch (Exception e) when (e is FvdException or IOException)
        {
            _syncFailure = $"{what} failed ({e.Message}); writes since the last successful flush may be lost; close the image and run 'fvd-img check -r all'";
            MarkCorrupt();
            throw new FvdException(FvdErrorKind.Io, _syncFailure, _path, e);
        }
    }

    /// <summary>Best effort: a failing disk may refuse this too, and the clean flag is already clear on disk.</summary>
    private void MarkCorrupt()
    {
        try
        {
            var (next, slot) = HeaderSlots.Prepare(_header, _slot, _header with { Incompatible = _header.Incompatible | IncompatibleFeatures.Corrupt });
            _dev.Write(HeaderSlots.Offset(slot), next.ToBytes());
            _dev.Flush();
            SetCurrent(next, slot);
        }
        catch (Exception e) when (e is FvdException or IOException)
        {
        }
    }

    public void Dispose() => _dev.Dispose();
}
