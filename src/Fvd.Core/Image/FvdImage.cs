// An open FVD image: the thin IBlockDevice front over its components (docs/architecture.md §6): the metadata
// file (MetadataFile.cs: header, regions, flush order), the block map (Mapping/IBlockMap.cs: where each block
// lives), the data file (DataFile.cs), the read-only backing (BackingReader.cs), copy-on-write
// (CopyOnWrite.cs), copy-on-read (CopyOnRead.cs), prefetch (Prefetcher.cs) and profile recording
// (ProfileRecorder.cs). FUSE, tools and tests treat it like a file. Here: create, open, the requests, close.
//
// Durability (docs/architecture.md §3): a bit goes 0 -> 1 on disk only after its block's data is durable;
// MetadataFile.Flush keeps that order and the rule that a failed sync is final.
using Fvd.Core.Format;
using Fvd.Core.Image.Mapping;
using Fvd.Core.Io;
using Fvd.Core.Qcow2;

namespace Fvd.Core.Image;

public sealed partial class FvdImage : IBlockDevice
{
    /// <summary>Largest default metadata, header included (paper 3.3.1 / original FVD's MODERATE_BITMAP_SIZE).</summary>
    public const long DefaultMaxBitmapBytes = 4 << 20;
    public const int DefaultMinBlockSize = 4096;

    private readonly MetadataFile _metadata;
    private readonly LinearMap _map;
    private readonly DataFile _data;
    private readonly BackingReader _backing;
    private readonly ImageCounters _counters = new();
    private readonly BlockSaver _saver;
    private readonly CopyOnWrite _writer;
    private readonly CopyOnRead _cor;
    private Prefetcher? _prefetcher;
    private List<(long Offset, long Length)>? _profile;
    private int _closing;
    private int _disposed;

    public string Path { get; }
    public FvdHeader Header => _metadata.Header;
    public long Length => Header.VirtualSize;
    public bool IsReadOnly { get; }
    public int BlockSize => Header.BlockSize;
    /// <summary>Bytes covered by the bitmap: min(backing size, virtual size). 0 without backing.</summary>
    public long BackingSize => Header.BackingSize;
    /// <summary>True when the image was not closed cleanly last time (found at open).</summary>
    public bool WasUnclean { get; }
    public string? BackingPath { get; }
    public string DataPath { get; }
    internal Bitmap Bitmap => _map.Bitmap; // tests
    internal IBlockMap BlockMap => _map;
    internal IBlockDevice DataDevice => _data.Device;
    internal IBlockDevice? BackingDevice => _backing.Device;

    private FvdImage(string path, MetadataFile metadata, LinearMap map, IBlockDevice data,
        string dataPath, IBlockDevice? backing, string? backingPath, bool readOnly)
    {
        var header = metadata.Header;
        Path = path;
        _metadata = metadata;
        _map = map;
        DataPath = dataPath;
        BackingPath = backingPath;
        IsReadOnly = readOnly;
        WasUnclean = (header.Flags & HeaderFlags.CleanShutdown) == 0;
        // The components, each with what it needs and no more (docs/architecture.md §6).
        _data = new DataFile(data, map, metadata);
        _backing = new BackingReader(backing, header.BackingSize, backingPath ?? path, _counters);
        var stripes = new StripeLocks();
        _saver = new BlockSaver(map, _data, stripes);
        _writer = new CopyOnWrite(map, _data, _backing, stripes, header.VirtualSize);
        _cor = new CopyOnRead(map, _backing, _saver, _counters, header.Prefetch.MaxOutstandingCorBytes,
            () => Volatile.Read(ref _closing) != 0, FinishIfAllLocal, path);
    }

    /// <summary>
    /// The default block size: the smallest power of two >= 4 KiB that keeps all metadata (the two 4 KiB header
    /// copies plus the bitmap, rounded to whole pages) at most 4 MiB: 64 KiB blocks for a 1 TiB template.
    /// </summary>
    public static int DefaultBlockSize(long backingSize)
    {
        long bs = DefaultMinBlockSize;
        while (MetadataRegions.EndOfBitmap(HeaderSlots.Count * FvdHeader.Size, FvdHeader.CeilDiv(FvdHeader.CeilDiv(backingSize, bs), 8)) > DefaultMaxBitmapBytes) bs *= 2;
        return (int)bs;
    }

    /// <summary>Resolves a path stored in a header against the image's directory.</summary>
    public static string ResolveRelative(string imagePath, string stored) =>
        System.IO.Path.IsPathRooted(stored) || HttpRangeDevice.IsUrl(stored) ? stored
            : System.IO.Path.GetFullPath(System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(imagePath)) ?? "/", stored));

    /// <summary>Creates a new image (and its data file); the image is left closed and clean.</summary>
    public static void Create(string path, FvdCreateOptions o) => Create(path, o, []);

    /// <summary>Create, refusing also to write any of the files in keep (a conversion's source files).</summary>
    internal static void Create(string path, FvdCreateOptions o, IReadOnlyList<(string Path, string Role)> keep)
    {
        long vsize = FvdHeader.AlignUp(o.VirtualSize, 512);
        if (o.VirtualSize <= 0 || vsize > FvdHeader.MaxVirtualSize)
            throw new FvdException(FvdErrorKind.InvalidArgument, $"virtual size {o.VirtualSize} must be between 1 byte and 64 TiB", path);
        if (o.BackingFile is not null && !FvdHeader.BackingFormats.Contains(o.BackingFormat))
            throw new FvdException(FvdErrorKind.UnsupportedFeature, $"backing format '{o.BackingFormat}' is not supported (raw, qcow2 or fvd)", path);
        if (!o.Overwrite && File.Exists(path))
            throw new FvdException(FvdErrorKind.InvalidArgument, "file exists (use a new name)", path);

        IBlockDevice? backing = null;
        long backingSize = 0;
        string? backingResolved = o.BackingFile is null ? null : ResolveRelative(path, o.BackingFile);
        // Nothing that is not the new image's own is created or truncated (by inode: links and "./x" too).
        string dataName = o.InlineData ? "" : o.DataFile ?? System.IO.Path.GetFileNameWithoutExtension(path) + ".data";
        string dataPath = o.InlineData ? path : ResolveRelative(path, dataName);
        IReadOnlyList<(string Path, string Role)> others = backingResolved is null ? keep : [.. keep, (backingResolved, "backing file")];
        FileIdentity.RefuseAlias(path, "image", others);
        if (!o.InlineData) FileIdentity.RefuseAlias(dataPath, "data file", [.. others, (path, "image's metadata file")]);
        if (backingResolved is not null)
        {
            // Shared-locked while the bitmap is built: a writer holding the template is refused.
            backing = OpenBacking(backingResolved, o.BackingFormat, new FvdOpenOptions());
            backingSize = Math.Min(backing.Length, vsize);
            if (backing is FileDevice bf) bf.Lock(exclusive: false);
        }
        bool remote = backing is HttpRangeDevice or Qcow2Device { IsRemote: true };
        try
        {
            int bs = o.BlockSize != 0 ? o.BlockSize : DefaultBlockSize(Math.Max(backingSize, 1));
            if (bs < FvdHeader.MinBlockSize || bs > FvdHeader.MaxBlockSize || (bs & (bs - 1)) != 0)
                throw new FvdException(FvdErrorKind.InvalidArgument, $"block size {bs} must be a power of two from 512 B to 16 MiB", path);
            long blocks = backingSize > 0 ? FvdHeader.CeilDiv(backingSize, bs) : 0;
            long bitmapLen = FvdHeader.CeilDiv(blocks, 8);
            if (bitmapLen > FvdHeader.MaxBitmapBytes)
                throw new FvdException(FvdErrorKind.InvalidArgument, $"block size {bs} needs a {bitmapLen}-byte bitmap; choose a larger block size", path);
            long headerArea = HeaderSlots.Count * (long)FvdHeader.Size;
            long metaEnd = MetadataRegions.EndOfBitmap(headerArea, bitmapLen);
            var header = new FvdHeader
            {
                Flags = HeaderFlags.CleanShutdown | (o.CopyOnRead ?? remote ? HeaderFlags.CopyOnRead : 0),
                Incompatible = IncompatibleFeatures.TwoHeaderSlots | (o.InlineData ? IncompatibleFeatures.InlineData : 0),
                VirtualSize = vsize,
                BlockSize = bs,
                BackingSize = backingSize,
                BitmapOffset = bitmapLen > 0 ? headerArea : 0,
                BitmapLength = bitmapLen,
                DataOffset = o.InlineData ? metaEnd : 0,
                Prefetch = o.Prefetch,
                BackingFormat = backing is not null ? o.BackingFormat : "",
                BackingPath = o.BackingFile ?? "",
                DataFile = dataName,
            };
            // Validate what we are about to write with the same rules a reader applies.
            header.Validate(o.InlineData ? metaEnd + vsize : metaEnd, path);

            var bitmap = new Bitmap(blocks);
            if (backing is not null && (o.ZeroAware ?? !remote)) MarkZeroBlocks(backing, backingSize, bs, bitmap, o.Progress);

            // A qcow2 or FVD backing reads more files than its own: none of them may be written either.
            var chainFiles = ChainFiles(backing);
            FileIdentity.RefuseAlias(path, "image", chainFiles);
            if (!o.InlineData) FileIdentity.RefuseAlias(dataPath, "data file", chainFiles);
            using var meta = FileDevice.Create(path, o.InlineData ? metaEnd + vsize : metaEnd, o.Overwrite);
            bool dataCreated = false;
            try
            {
                if (!o.InlineData)
                {
                    using var data = FileDevice.Create(dataPath, vsize, overwrite: true);
                    dataCreated = true;
                    data.Flush();
                }
                if (bitmapLen > 0) meta.Write(header.BitmapOffset, bitmap.ToBytes());
                meta.Flush();
                meta.Write(0, HeaderSlots.Initial(header));
                meta.Flush();
            }
            catch
            {
                // Leave nothing half-made behind (the header is written last, so this file is no image yet).
                TryDelete(path);
                if (dataCreated) TryDelete(dataPath);
                throw;
            }
        }
        finally
        {
            backing?.Dispose();
        }
    }

    /// <summary>
    /// Zero-aware creation (paper 3.3.3): blocks of the backing that are holes or all zeros become local,
    /// so they are never read from the backing and writing them needs no bitmap update. Holes are found
    /// with SEEK_DATA/SEEK_HOLE; only data regions are read and compared.
    /// </summary>
    private static void MarkZeroBlocks(IBlockDevice backing, long backingSize, int bs, Bitmap bitmap, Action<long, long>? progress)
    {
        const int chunk = 1 << 20;
        var buf = new byte[Math.Max(chunk, bs)];
        long pos = 0;
        while (pos < backingSize)
        {
            var e = backing.GetExtent(pos, backingSize - pos);
            if (e.Length <= 0) break;
            if (e.Kind == ExtentKind.Zero)
            {
                long first = FvdHeader.CeilDiv(e.Offset, bs);
                long endBlock = e.End >= backingSize ? bitmap.Blocks : e.End / bs;
                if (endBlock > first) bitmap.SetRange(first, endBlock - first);
            }
            else if (backing is not (Qcow2Device or FvdImage)) // their maps already say what is zero; their data is not read
            {
                long start = e.Offset / bs * bs;
                long end = Math.Min(FvdHeader.AlignUp(e.End, bs), backingSize);
                for (long p = start; p < end;)
                {
                    int n = (int)Math.Min(buf.Length, end - p);
                    backing.Read(p, buf.AsSpan(0, n));
                    for (int off = 0; off < n; off += bs)
                    {
                        int len = Math.Min(bs, n - off);
                        if (DeviceChecks.IsZero(buf.AsSpan(off, len))) bitmap.SetRange((p + off) / bs, 1);
                    }
                    p += n;
                    progress?.Invoke(p, backingSize);
                }
            }
            pos = e.End;
            progress?.Invoke(pos, backingSize);
        }
    }

    /// <summary>The size of a backing (path relative to the image, or URL), opened as Create would open it.</summary>
    public static long BackingLength(string imagePath, string backing, string format = "raw")
    {
        using var dev = OpenBacking(ResolveRelative(imagePath, backing), format, new FvdOpenOptions());
        return dev.Length;
    }

    /// <summary>
    /// Opens a backing read-only in its recorded format, never probed. A qcow2's own chain goes through the
    /// same file policy (regular files, devices only when allowed).
    /// </summary>
    internal static IBlockDevice OpenBacking(string resolved, string format, FvdOpenOptions o) => format switch
    {
        "raw" => OpenBacking(resolved, o),
        "qcow2" => Qcow2Device.Open(resolved, r => OpenBacking(r, o)),
        // An FVD template: read-only and shared-locked like any backing, its own chain opened the same way.
        "fvd" => OpenFvdBacking(resolved, o),
        _ => throw new FvdException(FvdErrorKind.UnsupportedFeature, $"backing format '{format}' is not supported (raw, qcow2 or fvd)", resolved),
    };

    private static FvdImage OpenFvdBacking(string resolved, FvdOpenOptions o)
    {
        if (HttpRangeDevice.IsUrl(resolved))
            throw new FvdException(FvdErrorKind.UnsupportedFeature, "an fvd backing must be a local file", resolved);
        return Open(resolved, o with { ReadOnly = true, SkipBacking = false });
    }

    /// <summary>The files a backing device reads besides the one it was opened from (qcow2 or FVD chains).</summary>
    internal static IReadOnlyList<(string Path, string Role)> ChainFiles(IBlockDevice? backing) => backing switch
    {
        Qcow2Device q => q.Files,
        FvdImage f => f.Files,
        _ => [],
    };

    private static IBlockDevice OpenBacking(string resolved, FvdOpenOptions o)
    {
        if (HttpRangeDevice.IsUrl(resolved)) return HttpRangeDevice.Open(resolved);
        var kind = FileKinds.Of(resolved);
        if (kind == FileKind.Missing) throw new FvdException(FvdErrorKind.NotFound, "backing file not found", resolved);
        if (kind == FileKind.Directory) throw new FvdException(FvdErrorKind.InvalidArgument, "backing file is a directory", resolved);
        if (kind == FileKind.BlockDevice && !o.AllowDeviceBacking)
            throw new FvdException(FvdErrorKind.PermissionDenied, "backing is a block device; allow it explicitly (allow_device_backing)", resolved);
        if (kind is not (FileKind.Regular or FileKind.BlockDevice))
            throw new FvdException(FvdErrorKind.PermissionDenied, $"backing is a {kind.ToString().ToLowerInvariant()}, not a regular file", resolved);
        return FileDevice.Open(resolved, readOnly: true);
    }

    /// <summary>
    /// Refuses an image or data file that is not a regular file: opening a FIFO blocks forever, and a
    /// character device or socket is never an image (found by fvd-reliability security).
    /// </summary>
    private static void RequireRegular(string path, string what)
    {
        var kind = FileKinds.Of(path);
        if (kind != FileKind.Regular)
            throw new FvdException(FvdErrorKind.PermissionDenied, $"{what} is a {kind.ToString().ToLowerInvariant()}, not a regular file", path);
    }

    /// <summary>Opens an image. Every header field is validated before use.</summary>
    public static FvdImage Open(string path, FvdOpenOptions? options = null)
    {
        var o = options ?? new FvdOpenOptions();
        if (!File.Exists(path))
            throw new FvdException(Directory.Exists(path) ? FvdErrorKind.InvalidArgument : FvdErrorKind.NotFound,
                Directory.Exists(path) ? "is a directory, not an image" : "image not found", path);
        RequireRegular(path, "image");
        var meta = FileDevice.Open(path, o.ReadOnly);
        IBlockDevice? data = null, backing = null;
        try
        {
            // Checked before the lock: the image at the top of a loop holds its own lock exclusively.
            var self = meta.Identity;
            if (o.ChainAbove.Contains(self))
                throw new FvdException(FvdErrorKind.InvalidFormat, "backing chain loops back to this image", path);
            if (!o.NoLock) meta.Lock(exclusive: !o.ReadOnly, o.LockWait);
            var header = ReadHeader(meta, path).Header;
            if (!header.InlineData)
            {
                string dataPath = ResolveRelative(path, header.DataFile);
                if (!File.Exists(dataPath)) throw new FvdException(FvdErrorKind.NotFound, "data file not found", dataPath);
                RequireRegular(dataPath, "data file");
                var df = FileDevice.Open(dataPath, o.ReadOnly);
                data = df;
                RefuseSameFile(df, "data file", meta, "image's metadata file");
                // Locked with the image: a second image naming this data file cannot write it too.
                if (!o.NoLock) df.Lock(exclusive: !o.ReadOnly, o.LockWait);
            }
            else if (header.DataOffset + header.VirtualSize > meta.Length)
            {
                if (o.ReadOnly) meta.AssumeLength(header.DataOffset + header.VirtualSize);
                else meta.SetLength(header.DataOffset + header.VirtualSize); // a crash during create; sparse growth is safe
            }

            string? backingPath = null;
            if (header.HasBacking && (header.Flags & HeaderFlags.PrefetchFinished) == 0)
            {
                backingPath = ResolveRelative(path, header.BackingPath);
                try
                {
                    if (!o.SkipBacking) backing = OpenBacking(backingPath, header.BackingFormat, o with { ChainAbove = [.. o.ChainAbove, self] });
                }
                catch (FvdException) when (o.AllowMissingBacking)
                {
                    backing = null;
                }
                if (backing is FileDevice bf)
                {
                    RefuseSameFile(bf, "backing file", meta, "image's metadata file");
                    if (data is FileDevice df) RefuseSameFile(bf, "backing file", df, "image's data file");
                    // Shared: many images may share a template, but nobody may write it while one is open.
                    if (!o.NoLock) bf.Lock(exclusive: false, o.LockWait);
                }
            }
            if (data is FileDevice dfile)
            {
                // Shorter than the disk (a crash during create, or a copy that dropped a sparse tail): grow it
                // when writable (only now that it is known not to be the backing); read-only, the tail past
                // EOF reads as zeros. Longer: the excess is never used.
                if (dfile.Length < header.VirtualSize && !o.ReadOnly) dfile.SetLength(header.VirtualSize);
                dfile.AssumeLength(header.VirtualSize);
            }
            return Attach(path, meta, data, backing, backingPath, o.ReadOnly);
        }
        catch
        {
            data?.Dispose();
            backing?.Dispose();
            meta.Dispose();
            throw;
        }
    }

    /// <summary>An image whose files alias each other would write its own template or header as data.</summary>
    private static void RefuseSameFile(FileDevice a, string aRole, FileDevice b, string bRole)
    {
        if (a.Identity == b.Identity)
            throw new FvdException(FvdErrorKind.InvalidFormat, $"the {aRole} is the {bRole} ({b.Path}); refusing to open", a.Path);
    }

    /// <summary>The files this image reads or writes, each with what it is (for FileIdentity.RefuseAlias).</summary>
    internal IReadOnlyList<(string Path, string Role)> Files
    {
        get
        {
            var files = new List<(string, string)> { (Path, "input image") };
            if (!Header.InlineData) files.Add((DataPath, "input image's data file"));
            if (BackingPath is not null) files.Add((BackingPath, "input image's backing file"));
            files.AddRange(ChainFiles(_backing.Device).Skip(1));
            return files;
        }
    }

    private static void TryDelete(string p)
    {
        try { File.Delete(p); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    /// <summary>The current header copy (HeaderSlots.cs), validated.</summary>
    internal static HeaderChoice ReadHeader(IBlockDevice meta, string path)
    {
        if (meta.Length < FvdHeader.Size)
            throw new FvdException(FvdErrorKind.InvalidFormat, $"file too short for an FVD header ({meta.Length} bytes)", path);
        var hb = new byte[Math.Min(meta.Length, HeaderSlots.Count * FvdHeader.Size)];
        meta.Read(0, hb);
        return HeaderSlots.Choose(hb, meta.Length, path);
    }

    /// <summary>
    /// Opens an image over devices the caller supplies (crash and race simulators, tests): meta holds the
    /// header and bitmap (and the data when inline, then data is null); the image owns all three devices.
    /// </summary>
    internal static FvdImage Attach(string path, IBlockDevice meta, IBlockDevice? data, IBlockDevice? backing,
        string? backingPath, bool readOnly)
    {
        var choice = ReadHeader(meta, path);
        var header = choice.Header;
        if ((header.Incompatible & IncompatibleFeatures.Corrupt) != 0 && !readOnly)
            throw new FvdException(FvdErrorKind.CorruptImage, "image is marked corrupt; open it read-only or run 'fvd-img check -r all'", path);
        var map = LinearMap.Load(meta, header, path);
        if (backing is not null && backing.Length < header.BackingSize)
            throw new FvdException(FvdErrorKind.InvalidFormat,
                $"backing file is {backing.Length} bytes, smaller than the {header.BackingSize} bytes the image was created over", backingPath ?? path);
        string dataPath;
        if (header.InlineData)
        {
            if (data is not null) throw new ArgumentException("inline-data image takes no data device", nameof(data));
            if (header.DataOffset + header.VirtualSize > meta.Length)
                throw new FvdException(FvdErrorKind.CorruptImage, $"inline data area is truncated (file is {meta.Length} bytes, needs {header.DataOffset + header.VirtualSize})", path);
            data = new SliceDevice(meta, header.DataOffset, header.VirtualSize);
            dataPath = path;
        }
        else
        {
            if (data is null) throw new ArgumentException("image needs a data device", nameof(data));
            if (data.Length < header.VirtualSize)
                throw new FvdException(FvdErrorKind.CorruptImage, $"data file is {data.Length} bytes, shorter than the {header.VirtualSize}-byte disk", path);
            dataPath = ResolveRelative(path, header.DataFile);
        }
        var img = new FvdImage(path, new MetadataFile(meta, choice, path), map, data, dataPath, backing, backingPath, readOnly);
        if (!readOnly && (header.Flags & HeaderFlags.CleanShutdown) != 0)
            img._metadata.UpdateHeader(h => h with { Flags = h.Flags & ~HeaderFlags.CleanShutdown });
        // Recovery after a crash: data written but never flushed lies in blocks whose bit is still 0. It is
        // never read; punch it out before any request runs, so the space comes back and check finds no leak.
        if (!readOnly && img.WasUnclean && header.HasBacking && !map.Finished)
        {
            var (leaks, _) = Leaks.Find(data, map);
            if (leaks.Count > 0) Leaks.Reclaim(data, leaks);
        }
        return img;
    }

    /// <summary>
    /// Makes every write that completed before the call durable, data first and then the bitmap bits that
    /// name it (MetadataFile.Flush).
    /// </summary>
    public void Flush()
    {
        ThrowIfDisposed();
        if (IsReadOnly) return;
        _metadata.Flush(_data.Device, _map);
    }

    /// <summary>Sets or clears the copy-on-read default and persists it.</summary>
    public void SetHeaderFlags(HeaderFlags set, HeaderFlags clear)
    {
        ThrowIfDisposed();
        if (IsReadOnly) throw new FvdException(FvdErrorKind.ReadOnly, "image is open read-only", Path);
        _metadata.UpdateHeader(h => h with { Flags = (h.Flags | set) & ~clear });
    }

    /// <summary>Stops background work, flushes everything and marks the image clean.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _closing, 1) != 0) return;
        MarkClosing();
        try
        {
            StopBackgroundWork();
            if (!IsReadOnly)
            {
                Flush();
                _metadata.UpdateHeader(h => h with { Flags = h.Flags | HeaderFlags.CleanShutdown });
            }
        }
        finally
        {
            Volatile.Write(ref _disposed, 1);
            _data.Dispose();
            _backing.Dispose();
            _metadata.Dispose();
        }
    }

    /// <summary>
    /// Tells other openers that this image is being closed, so one waiting for its lock waits for the final
    /// flush instead of failing (see FileDevice.MarkClosing). Dispose does it first; call it earlier when a
    /// flush of your own comes before Dispose.
    /// </summary>
    public void MarkClosing() => (_metadata.Device as FileDevice)?.MarkClosing();

    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0) throw new ObjectDisposedException(nameof(FvdImage), "image is closed");
    }

    // Reads: split by the block map into runs served by the data file and runs served by the backing image
    // (paper 3.2). Bytes past the backing's end read as zeros; once prefetch has finished, everything is local.

    public void Read(long offset, Span<byte> buffer)
    {
        ThrowIfDisposed();
        DeviceChecks.Range(this, offset, buffer.Length, Path);
        long pos = offset;
        long end = offset + buffer.Length;
        while (pos < end)
        {
            var place = _map.Lookup(pos, end, out long runEnd, out long dataOffset);
            var dst = buffer.Slice((int)(pos - offset), (int)(runEnd - pos));
            if (place == Placement.Local) _data.Read(dataOffset, dst);
            else if (_cor.Enabled) _cor.Read(pos, dst);
            else _backing.Read(pos, dst);
            pos = runEnd;
        }
    }

    /// <summary>
    /// True when serving this request may read the backing (and so wait on a slow server): a read of a range
    /// not all local, or a write whose partly covered first or last block is still in the backing. False
    /// means the request touches only the data file.
    /// </summary>
    public bool MayReadBacking(long offset, long length, bool write)
    {
        long end = Math.Min(offset + Math.Max(0, length), Length);
        if (offset < 0 || offset >= Math.Min(end, _map.MappedEnd) || _map.Finished) return false;
        if (!write) return _map.Lookup(offset, end, out long runEnd, out _) != Placement.Local || runEnd < end;
        return EdgeInBacking(offset >> _map.BlockShift) || EdgeInBacking((end - 1) >> _map.BlockShift);

        bool EdgeInBacking(long b) => _writer.EdgeInBacking(b, offset, end);
    }

    /// <summary>True once every block is local (prefetch finished): the backing is never consulted.</summary>
    private bool AllLocal => _map.Finished;

    /// <summary>Where each range of the disk comes from (fvd-img map, SEEK_DATA/SEEK_HOLE).</summary>
    public IEnumerable<MapEntry> Map(long offset = 0, long length = -1)
    {
        ThrowIfDisposed();
        long end = length < 0 ? Length : offset + Math.Min(length, Length - offset); // no overflow for long.MaxValue
        long pos = offset;
        MapEntry? pending = null;
        while (pos < end)
        {
            bool local = _map.Lookup(pos, end, out long runEnd, out long dataOffset) == Placement.Local;
            for (long p = pos; p < runEnd;)
            {
                MapEntry e;
                if (local)
                {
                    var x = _data.GetExtent(dataOffset + (p - pos), runEnd - p);
                    e = new MapEntry(p, x.Length, x.Kind == ExtentKind.Data ? MapKind.Data : MapKind.Zero);
                }
                else
                {
                    long inBacking = Math.Min(runEnd, Header.BackingSize);
                    if (p >= inBacking) e = new MapEntry(p, runEnd - p, MapKind.BackingZero);
                    else if (_backing.Device is null) e = new MapEntry(p, inBacking - p, MapKind.Backing);
                    else
                    {
                        var x = _backing.Device.GetExtent(p, inBacking - p);
                        e = new MapEntry(p, x.Length, x.Kind == ExtentKind.Data ? MapKind.Backing : MapKind.BackingZero);
                    }
                }
                if (e.Length <= 0) throw new FvdException(FvdErrorKind.Io, $"extent query at {p} returned nothing", Path);
                if (pending is { } q && q.Kind == e.Kind && q.Offset + q.Length == e.Offset)
                    pending = q with { Length = q.Length + e.Length };
                else
                {
                    if (pending is { } done) yield return done;
                    pending = e;
                }
                p += e.Length;
            }
            pos = runEnd;
        }
        if (pending is { } last) yield return last;
    }

    public Extent GetExtent(long offset, long maxLength)
    {
        DeviceChecks.Range(this, offset, 1, Path);
        long limit = offset + Math.Min(maxLength, Length - offset); // no overflow for maxLength = long.MaxValue
        ExtentKind? kind = null;
        long pos = offset;
        foreach (var m in Map(offset, limit - offset))
        {
            var k = m.Kind is MapKind.Data or MapKind.Backing ? ExtentKind.Data : ExtentKind.Zero;
            if (kind is null) kind = k;
            else if (kind != k) break;
            pos = m.Offset + m.Length;
        }
        return new Extent(kind ?? ExtentKind.Zero, offset, pos - offset);
    }


    // Writes, discards and zeroing: copy-on-write per block (CopyOnWrite.cs).

    public void Write(long offset, ReadOnlySpan<byte> buffer) => Modify(WriteOp.Write, offset, buffer.Length, buffer);

    /// <summary>Deallocates a range; it reads as zeros afterwards, also where the backing had data.</summary>
    public void Discard(long offset, long length) => Modify(WriteOp.Discard, offset, length, default);

    public void WriteZeroes(long offset, long length) => Modify(WriteOp.Zero, offset, length, default);

    private void Modify(WriteOp op, long offset, long length, ReadOnlySpan<byte> src)
    {
        ThrowIfDisposed();
        DeviceChecks.Writable(this, Path);
        DeviceChecks.Range(this, offset, length, Path);
        if (length > 0) _writer.Modify(op, offset, length, src);
    }

    // Copy-on-read (CopyOnRead.cs) and the counters.

    /// <summary>Whether reads from the backing are saved into the data file (default from the header).</summary>
    public bool CopyOnReadEnabled => _cor.Enabled;

    /// <summary>Turns copy-on-read on or off for this open (not persisted).</summary>
    public void EnableCopyOnRead(bool on)
    {
        if (on && (IsReadOnly || _backing.Device is null)) return;
        _cor.Enable(on);
    }

    /// <summary>Waits until every queued copy-on-read save has been written (tests, fvd-img).</summary>
    public bool WaitForCopyOnRead(TimeSpan timeout) => _cor.WaitForSaves(timeout);

    /// <summary>Saves backing content of whole blocks at a block-aligned offset (BlockSaver.Save; tests).</summary>
    internal long SaveBlocks(long offset, ReadOnlySpan<byte> content) => _saver.Save(offset, content);

    public ImageStatus Status => new()
    {
        Image = Path,
        VirtualSize = Length,
        BlocksTotal = _map.Blocks,
        BlocksLocal = _map.CountLocal(),
        BackingBytesRead = Interlocked.Read(ref _counters.BackingBytesRead),
        CopyOnReadBytesSaved = Interlocked.Read(ref _counters.CopyOnReadBytesSaved),
        PrefetchBytesSaved = Interlocked.Read(ref _counters.PrefetchBytesSaved),
        // Finished however the blocks became local, even while a delayed prefetch still waits to notice.
        Prefetch = AllLocal && _map.Blocks > 0 ? PrefetchState.Finished : _prefetcher?.State ?? PrefetchState.Disabled,
        PrefetchRate = _prefetcher?.Rate ?? 0,
        CopyOnRead = _cor.Enabled,
        Finished = AllLocal,
    };

    // Background work of a mounted image: copy-on-read and prefetch (paper 3.3.4, 3.4). Tools do not start it
    // (the paper: no prefetch inside qemu tools); the FUSE daemon does.


    /// <summary>
    /// Starts copy-on-read (per the header's flag unless overridden) and prefetch (when the header's start
    /// delay, or the override, is >= 0). No-op without a backing or when read-only or finished; an image
    /// whose blocks all became local earlier (guest writes, copy-on-read) is finished here instead.
    /// </summary>
    public void StartBackgroundWork(bool? copyOnRead = null, PrefetchSettings? prefetch = null)
    {
        ThrowIfDisposed();
        if (IsReadOnly || _backing.Device is null || AllLocal) return;
        FinishIfAllLocal();
        if (AllLocal) return;
        EnableCopyOnRead(copyOnRead ?? (Header.Flags & HeaderFlags.CopyOnRead) != 0);
        var s = prefetch ?? Header.Prefetch;
        if (s.StartDelaySeconds >= 0 && _prefetcher is null) _prefetcher = NewPrefetcher(s);
    }

    /// <summary>The last prefetch error, if prefetch stopped on one.</summary>
    public string? PrefetchError => _prefetcher?.Error;

    private Prefetcher NewPrefetcher(PrefetchSettings s) =>
        new(s, _map, _backing, _saver, _counters, () => PrefetchProfileEntries, Flush, FinishIfAllLocal, Path);

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
        if (_backing.Device is null) throw new FvdException(FvdErrorKind.NotFound, "backing file is not available", BackingPath ?? Path);
        var s = (limits ?? Header.Prefetch) with { StartDelaySeconds = 0 };
        using (var p = NewPrefetcher(s))
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
        _cor.Enable(false);
    }

    private void StopBackgroundWork()
    {
        _prefetcher?.Dispose();
        _prefetcher = null;
        _cor.Stop();
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

    // Profile-directed prefetch (paper 3.4.1): record the backing ranges a boot reads (ProfileRecorder.cs),
    // store them in the image, and let prefetch fetch those first.

    /// <summary>The stored prefetch profile (empty when none).</summary>
    public IReadOnlyList<(long Offset, long Length)> PrefetchProfileEntries => _profile ?? LoadProfile();

    private List<(long Offset, long Length)> LoadProfile() => _profile =
        _metadata.Regions.Profile.Length == 0 ? new() : PrefetchProfile.Parse(_metadata.ReadProfile(), Header.BackingSize, Path);

    /// <summary>Starts recording which backing ranges are read (first read of each block only).</summary>
    public void StartProfileRecording() => _backing.StartRecording(_map.BlockShift);

    /// <summary>The ranges recorded so far, in first-read order, merged where adjacent.</summary>
    public List<(long Offset, long Length)> RecordedProfile() => _backing.Recorder?.Entries() ?? new();

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
        var rec = new ProfileRecorder(Header.BackingSize, _map.BlockShift);
        foreach (var (o, l) in reads)
            if (o >= 0 && o < Header.BackingSize && l > 0) rec.Record(o, Math.Min(l, Header.BackingSize - o));
        return rec.Entries();
    }

    /// <summary>
    /// Test-only: wraps the data device of an image that was just opened (e.g. in a RecordingDevice) so tests
    /// can observe the order of data writes, data flushes and bitmap updates. Call it right after Open.
    /// </summary>
    internal void WrapDataDeviceForTests(Func<IBlockDevice, IBlockDevice> wrap)
    {
        ThrowIfDisposed();
        _data.WrapForTests(wrap);
    }
}
