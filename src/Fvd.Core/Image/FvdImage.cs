// An open FVD image: the metadata file (header + bitmap), the data file (byte d = virtual byte d) and the
// read-only backing image. The image is itself an IBlockDevice, so FUSE, tools and tests treat it like a
// file. This part: create, open, flush, close. Reads: FvdImage.Read.cs. Writes: FvdImage.Write.cs.
//
// Durability (DESIGN.md 3, 5): a bit goes 0 -> 1 on disk only after its block's data is durable.
// Flush = snapshot dirty bitmap pages -> fdatasync(data) -> write pages -> fdatasync(metadata).
// A failed sync is final: Linux reports a writeback error once, so a retry would "succeed" over data that
// never reached the disk. Every later flush and header write fails, no bit is written for the blocks
// concerned, the image is never marked clean, and the header gets the corrupt mark (cleared by fvd-img check -r all).
using Fvd.Core.Format;
using Fvd.Core.Io;
using Fvd.Core.Qcow2;

namespace Fvd.Core.Image;

public sealed partial class FvdImage : IBlockDevice
{
    /// <summary>Largest default metadata, header included (paper 3.3.1 / original FVD's MODERATE_BITMAP_SIZE).</summary>
    public const long DefaultMaxBitmapBytes = 4 << 20;
    public const int DefaultMinBlockSize = 4096;

    private readonly IBlockDevice _meta;
    private IBlockDevice _data; // replaced only by WrapDataDeviceForTests
    private readonly IBlockDevice? _backing;
    private readonly Bitmap _bitmap;
    private readonly int _blockShift;
    private readonly object _flushLock = new();
    private FvdHeader _header;
    private int _slot; // the header slot holding _header (HeaderSlots.cs)
    private string? _syncFailure; // set by the first failed sync; see Sync
    private int _disposed;

    public string Path { get; }
    public FvdHeader Header => _header;
    public long Length => _header.VirtualSize;
    public bool IsReadOnly { get; }
    public int BlockSize => _header.BlockSize;
    /// <summary>Bytes covered by the bitmap: min(backing size, virtual size). 0 without backing.</summary>
    public long BackingSize => _header.BackingSize;
    /// <summary>True when the image was not closed cleanly last time (found at open).</summary>
    public bool WasUnclean { get; }
    public string? BackingPath { get; }
    public string DataPath { get; }
    internal Bitmap Bitmap => _bitmap;
    internal IBlockDevice DataDevice => _data;
    internal IBlockDevice? BackingDevice => _backing;

    private FvdImage(string path, IBlockDevice meta, FvdHeader header, Bitmap bitmap, IBlockDevice data,
        string dataPath, IBlockDevice? backing, string? backingPath, bool readOnly)
    {
        Path = path;
        _meta = meta;
        _header = header;
        _bitmap = bitmap;
        _data = data;
        DataPath = dataPath;
        _backing = backing;
        BackingPath = backingPath;
        IsReadOnly = readOnly;
        _blockShift = System.Numerics.BitOperations.Log2((uint)header.BlockSize);
        WasUnclean = (header.Flags & HeaderFlags.CleanShutdown) == 0;
        _stripes = new object[StripeCount];
        for (int i = 0; i < StripeCount; i++) _stripes[i] = new object();
    }

    /// <summary>
    /// The default block size: the smallest power of two >= 4 KiB that keeps all metadata (the two 4 KiB header
    /// copies plus the bitmap, rounded to whole pages) at most 4 MiB: 64 KiB blocks for a 1 TiB template.
    /// </summary>
    public static int DefaultBlockSize(long backingSize)
    {
        long bs = DefaultMinBlockSize;
        while (HeaderSlots.Count * FvdHeader.Size + FvdHeader.AlignUp(FvdHeader.CeilDiv(FvdHeader.CeilDiv(backingSize, bs), 8), 4096) > DefaultMaxBitmapBytes) bs *= 2;
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
            long metaEnd = bitmapLen == 0 ? headerArea : FvdHeader.AlignUp(headerArea + bitmapLen, 4096);
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
            if (!_header.InlineData) files.Add((DataPath, "input image's data file"));
            if (BackingPath is not null) files.Add((BackingPath, "input image's backing file"));
            files.AddRange(ChainFiles(_backing).Skip(1));
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
        var bmBytes = new byte[header.BitmapLength];
        if (header.BitmapLength > 0) meta.Read(header.BitmapOffset, bmBytes);
        var bitmap = Bitmap.FromBytes(header.BitmapBlocks, bmBytes, path);
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
        var img = new FvdImage(path, meta, header, bitmap, data, dataPath, backing, backingPath, readOnly) { _slot = choice.Slot };
        if (!readOnly && (header.Flags & HeaderFlags.CleanShutdown) != 0)
            img.WriteHeader(header with { Flags = header.Flags & ~HeaderFlags.CleanShutdown });
        // Recovery after a crash: data written but never flushed lies in blocks whose bit is still 0. It is
        // never read; punch it out before any request runs, so the space comes back and check finds no leak.
        if (!readOnly && img.WasUnclean && header.HasBacking && !img.AllLocal)
        {
            var (leaks, _) = Leaks.Find(data, bitmap, header.BlockSize, img.BitmapEnd);
            if (leaks.Count > 0) Leaks.Reclaim(data, leaks);
        }
        return img;
    }

    /// <summary>Writes h as the new current header (into the other slot when there are two) and syncs it.</summary>
    private void WriteHeader(FvdHeader h)
    {
        ThrowIfSyncFailed();
        var (next, slot) = HeaderSlots.Prepare(_header, _slot, h);
        _meta.Write(HeaderSlots.Offset(slot), next.ToBytes());
        Sync(_meta, "metadata sync");
        _header = next;
        _slot = slot;
    }

    private void ThrowIfSyncFailed()
    {
        if (_syncFailure is not null) throw new FvdException(FvdErrorKind.Io, _syncFailure, Path);
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
            throw new FvdException(FvdErrorKind.Io, _syncFailure, Path, e);
        }
    }

    /// <summary>Best effort: a failing disk may refuse this too, and the clean flag is already clear on disk.</summary>
    private void MarkCorrupt()
    {
        try
        {
            var (next, slot) = HeaderSlots.Prepare(_header, _slot, _header with { Incompatible = _header.Incompatible | IncompatibleFeatures.Corrupt });
            _meta.Write(HeaderSlots.Offset(slot), next.ToBytes());
            _meta.Flush();
            _header = next;
            _slot = slot;
        }
        catch (Exception e) when (e is FvdException or IOException)
        {
        }
    }

    /// <summary>
    /// Makes every write that completed before the call durable, data first and then the bitmap bits that
    /// name it (data -> fdatasync -> bitmap -> fdatasync).
    /// </summary>
    public void Flush()
    {
        ThrowIfDisposed();
        if (IsReadOnly) return;
        lock (_flushLock)
        {
            ThrowIfSyncFailed();
            // Snapshot first: every bit set now belongs to a data write that has already completed, so the
            // fdatasync below makes its data durable before the bit is written.
            var pages = _header.BitmapLength > 0 ? _bitmap.TakeDirtyPages() : new List<int>();
            var copies = new byte[pages.Count][];
            for (int i = 0; i < pages.Count; i++)
            {
                copies[i] = new byte[Bitmap.PageBytes];
                _bitmap.CopyPage(pages[i], copies[i]);
            }
            // No retry after a failed sync: these pages' new bits would then reach the disk over data that
            // never did. Only a failed bitmap write (before any sync) leaves the pages dirty for the next flush.
            // Taken after the pages: a bit in them was set after its data write marked the data written.
            if (Interlocked.Exchange(ref _dataWritten, 0) != 0) Sync(_data, "data sync");
            if (pages.Count == 0) return;
            try
            {
                for (int i = 0; i < pages.Count; i++)
                {
                    long start = (long)pages[i] * Bitmap.PageBytes;
                    int len = (int)Math.Min(Bitmap.PageBytes, _bitmap.ByteLength - start);
                    _meta.Write(_header.BitmapOffset + start, copies[i].AsSpan(0, len));
                }
            }
            catch
            {
                foreach (var p in pages) _bitmap.MarkDirty(p);
                throw;
            }
            Sync(_meta, "metadata sync");
        }
    }

    /// <summary>
    /// Called after every completed write to the data file and before any bit naming it is set, so a flush
    /// with nothing written since the last one skips the fdatasync (an O_DSYNC write followed by the FSYNC
    /// the kernel sends for it costs one sync, not two).
    /// </summary>
    private void MarkDataWritten()
    {
        if (Volatile.Read(ref _dataWritten) == 0) Interlocked.Exchange(ref _dataWritten, 1);
    }

    private int _dataWritten;

    /// <summary>Sets or clears the copy-on-read default and persists it.</summary>
    public void SetHeaderFlags(HeaderFlags set, HeaderFlags clear)
    {
        ThrowIfDisposed();
        if (IsReadOnly) throw new FvdException(FvdErrorKind.ReadOnly, "image is open read-only", Path);
        lock (_flushLock) WriteHeader(_header with { Flags = (_header.Flags | set) & ~clear });
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
                lock (_flushLock) WriteHeader(_header with { Flags = _header.Flags | HeaderFlags.CleanShutdown });
            }
        }
        finally
        {
            Volatile.Write(ref _disposed, 1);
            _data.Dispose();
            _backing?.Dispose();
            _meta.Dispose();
        }
    }

    private int _closing;

    /// <summary>
    /// Tells other openers that this image is being closed, so one waiting for its lock waits for the final
    /// flush instead of failing (see FileDevice.MarkClosing). Dispose does it first; call it earlier when a
    /// flush of your own comes before Dispose.
    /// </summary>
    public void MarkClosing() => (_meta as FileDevice)?.MarkClosing();

    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0) throw new ObjectDisposedException(nameof(FvdImage), "image is closed");
    }
}
