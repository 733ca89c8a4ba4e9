// A read-only qcow2 image (versions 2 and 3) as an IBlockDevice, over any device holding the file (a local
// file, or HttpRangeDevice: then only the header, L1, the L2 tables and the clusters a read needs are
// fetched). No qemu at run time. man/fvd.5 says where it is used: a backing_format "qcow2" template, and
// fvd-img convert -f qcow2.
//
// A virtual offset maps through the L1 table (loaded at open) to an L2 table (read on demand, kept in a
// bounded LRU) to an entry: data at a host offset, a compressed cluster, zeros, or unallocated. Unallocated
// bytes come from the qcow2's own backing (raw or qcow2, opened with its recorded format, never probed),
// or read as zeros without one. Every table entry is checked against the file before it is used.
// Thread-safe: no per-read state outside locals and the cache.
using System.Buffers;
using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Core.Qcow2;

public sealed class Qcow2Device : IBlockDevice
{
    /// <summary>Default bound of the L2 table cache.</summary>
    public const long DefaultCacheBytes = 32L << 20;
    /// <summary>Bound of the cache of inflated compressed clusters (at least one cluster).</summary>
    public const long InflatedCacheBytes = 4L << 20;
    /// <summary>Longest backing chain followed (a loop is refused before this, by file identity).</summary>
    public const int MaxChainDepth = 16;

    private readonly IBlockDevice _file;
    private readonly IBlockDevice? _backing;
    private readonly byte[] _l1;
    private readonly ClusterCache _cache;
    private readonly ClusterCache _inflated;
    private readonly string? _path;
    private readonly int _clusterBits;
    private readonly string[] _files; // this file and its backing chain, top first (paths or URLs)

    public Qcow2Header Header { get; }
    public long Length { get; }
    public bool IsReadOnly => true;
    /// <summary>True when the file is read over HTTP (then reading data is costly, tables are cheap).</summary>
    public bool IsRemote => _file is HttpRangeDevice;
    /// <summary>The opened backing (raw or qcow2), when the image has one.</summary>
    public IBlockDevice? Backing => _backing;

    private Qcow2Device(IBlockDevice file, Qcow2Header header, byte[] l1, IBlockDevice? backing, string? path, long cacheBytes, string[] files)
    {
        _files = files;
        _file = file;
        Header = header;
        _l1 = l1;
        _backing = backing;
        _path = path;
        _clusterBits = (int)header.ClusterBits;
        Length = (long)header.Size;
        _cache = new ClusterCache(cacheBytes, header.ClusterSize);
        _inflated = new ClusterCache(Math.Min(cacheBytes, InflatedCacheBytes), header.ClusterSize);
    }

    /// <summary>Reads and validates the header of a qcow2 file (the first cluster, or less when the file is shorter).</summary>
    public static Qcow2Header ReadHeader(IBlockDevice file, string? path)
    {
        var head = new byte[(int)Math.Min(file.Length, 4096)];
        file.Read(0, head);
        // Extensions may fill the whole first cluster: read all of it when cluster_bits is sane (Parse checks it).
        if (Qcow2Header.HasMagic(head) && head.Length >= Qcow2Header.V2HeaderLength)
        {
            uint bits = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(Qcow2Header.Offsets.ClusterBits));
            if (bits <= Qcow2Header.MaxClusterBits && 1L << (int)bits > head.Length && file.Length > head.Length)
            {
                head = new byte[(int)Math.Min(file.Length, 1L << (int)bits)];
                file.Read(0, head);
            }
        }
        var h = Qcow2Header.Parse(head, path);
        h.Validate(file.Length, path);
        return h;
    }

    /// <summary>
    /// A qcow2 over a device the caller opened, with its backing already opened (or null: unallocated bytes
    /// read as zeros). Takes ownership of both on success.
    /// </summary>
    public static Qcow2Device Attach(IBlockDevice file, IBlockDevice? backing, string? path = null, long cacheBytes = DefaultCacheBytes)
    {
        var h = ReadHeader(file, path);
        return Attach(file, h, backing, path, cacheBytes, []);
    }

    private static Qcow2Device Attach(IBlockDevice file, Qcow2Header h, IBlockDevice? backing, string? path, long cacheBytes, string[] files)
    {
        // Validate bounded the size by MaxL1Bytes and by the file's length.
        var l1 = new byte[h.L1Size * Qcow2L1Entry.Bytes];
        if (l1.Length > 0) file.Read((long)h.L1TableOffset, l1);
        return new Qcow2Device(file, h, l1, backing, path, cacheBytes, files);
    }

    /// <summary>
    /// Opens a qcow2 file or http(s) URL and its backing chain. openRaw opens one file or URL read-only with
    /// the caller's policy (regular files only, block devices or not); it is used for every file of the chain.
    /// </summary>
    public static Qcow2Device Open(string location, Func<string, IBlockDevice> openRaw, long cacheBytes = DefaultCacheBytes) =>
        Open(location, openRaw, cacheBytes, new List<string>());

    private static Qcow2Device Open(string location, Func<string, IBlockDevice> openRaw, long cacheBytes, List<string> chain)
    {
        string id = FileIdentity.Key(location);
        if (chain.Contains(id))
            throw new FvdException(FvdErrorKind.InvalidFormat, "qcow2 backing chain loops back to this file", location);
        if (chain.Count >= MaxChainDepth)
            throw new FvdException(FvdErrorKind.InvalidFormat, $"qcow2 backing chain is deeper than {MaxChainDepth}", location);
        chain.Add(id);
        var file = openRaw(location);
        IBlockDevice? backing = null;
        try
        {
            var h = ReadHeader(file, location);
            string[] below = [];
            if (h.BackingFile is not null)
            {
                string resolved = Resolve(location, h.BackingFile);
                backing = h.BackingFormat switch
                {
                    "raw" => openRaw(resolved),
                    "qcow2" => Open(resolved, openRaw, cacheBytes, chain),
                    null => throw new FvdException(FvdErrorKind.UnsupportedFeature,
                        "qcow2 image names a backing file but not its format (qemu-img rebase -u -F FORMAT records it)", location),
                    _ => throw new FvdException(FvdErrorKind.UnsupportedFeature,
                        $"qcow2 backing format '{h.BackingFormat}' is not supported (raw or qcow2)", location),
                };
                below = backing is Qcow2Device q ? q._files : [resolved];
            }
            return Attach(file, h, backing, location, cacheBytes, [location, .. below]);
        }
        catch
        {
            backing?.Dispose();
            file.Dispose();
            throw;
        }
    }

    /// <summary>A backing name resolved against the image: a URL's relatives stay on its server.</summary>
    private static string Resolve(string location, string stored) =>
        HttpRangeDevice.IsUrl(location) && !HttpRangeDevice.IsUrl(stored)
            ? new Uri(new Uri(location), stored).AbsoluteUri
            : FvdImage.ResolveRelative(location, stored);

    /// <summary>
    /// This file and every file of its backing chain, so a convert or create never writes over what it
    /// reads (compared by device and inode in FileIdentity).
    /// </summary>
    internal IReadOnlyList<(string Path, string Role)> Files =>
        [.. _files.Select((f, i) => (f, i == 0 ? "qcow2 input" : "file of the qcow2 backing chain"))];

    public void Read(long offset, Span<byte> buffer)
    {
        DeviceChecks.Range(this, offset, buffer.Length, _path);
        while (!buffer.IsEmpty)
        {
            var kind = Map(offset, out var entry, out long run);
            int n = (int)Math.Min(run, buffer.Length);
            var dst = buffer[..n];
            int inCluster = (int)(offset & ((1L << _clusterBits) - 1));
            switch (kind)
            {
                case Qcow2ClusterKind.Zero:
                    dst.Clear();
                    break;
                case Qcow2ClusterKind.Unallocated:
                    ReadClamped(_backing, offset, dst);
                    break;
                case Qcow2ClusterKind.Data:
                    ReadClamped(_file, entry.HostOffset + inCluster, dst);
                    break;
                case Qcow2ClusterKind.Compressed:
                    var desc = entry.Compressed(_clusterBits);
                    _inflated.Get(desc.HostOffset, _ => Inflate(desc)).AsSpan(inCluster, n).CopyTo(dst);
                    break;
            }
            offset += n;
            buffer = buffer[n..];
        }
    }

    private byte[] Inflate(Qcow2CompressedDescriptor desc)
    {
        var cluster = new byte[1 << _clusterBits];
        int len = desc.LengthIn(_file.Length);
        var src = ArrayPool<byte>.Shared.Rent(len);
        try
        {
            _file.Read(desc.HostOffset, src.AsSpan(0, len));
            ClusterDecompressor.Decompress(Header.Compression, src, len, cluster, desc.HostOffset, _path);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(src);
        }
        return cluster;
    }

    /// <summary>Reads what dev has of the range; bytes past its end (or all, without dev) are zeros.</summary>
    private static void ReadClamped(IBlockDevice? dev, long offset, Span<byte> dst)
    {
        long have = dev is null ? 0 : Math.Clamp(dev.Length - offset, 0, dst.Length);
        if (have > 0) dev!.Read(offset, dst[..(int)have]);
        dst[(int)have..].Clear();
    }

    /// <summary>
    /// What the byte at a virtual offset is, with the L2 entry that says so, and how many bytes from there
    /// share that answer (to the end of a subcluster run, a cluster, or an absent L2 table's range).
    /// </summary>
    private Qcow2ClusterKind Map(long offset, out Qcow2L2Entry entry, out long run)
    {
        entry = default;
        long vcluster = offset >> _clusterBits;
        int inCluster = (int)(offset & ((1L << _clusterBits) - 1));
        long l2Entries = Header.L2Entries;
        long l1Index = vcluster / l2Entries;
        var l1 = Qcow2L1Entry.Read(_l1, l1Index);
        l1.Validate(Header.ClusterSize, _file.Length, l1Index, _path);
        if (l1.L2Offset == 0)
        {
            run = ((l1Index + 1) * l2Entries << _clusterBits) - offset;
            return Qcow2ClusterKind.Unallocated;
        }
        var table = _cache.Get(l1.L2Offset, LoadTable);
        entry = Qcow2L2Entry.Read(table, vcluster % l2Entries, Header.ExtendedL2);
        var kind = entry.Classify(inCluster, _clusterBits, Header.ExtendedL2, _file.Length, _path, out int r);
        run = r;
        return kind;
    }

    private byte[] LoadTable(long offset)
    {
        var t = new byte[Header.ClusterSize];
        _file.Read(offset, t);
        return t;
    }

    // How a range looks from outside: Data (this file has the bytes), Zero, or Backing (ask the backing).
    private enum Source { Data, Zero, Backing }

    private Source SourceOf(Qcow2ClusterKind k) => k switch
    {
        Qcow2ClusterKind.Data or Qcow2ClusterKind.Compressed => Source.Data,
        Qcow2ClusterKind.Unallocated when _backing is not null => Source.Backing,
        _ => Source.Zero,
    };

    /// <summary>
    /// From the tables alone, without reading data: zero clusters and unallocated clusters without a backing
    /// are Zero, allocated and compressed clusters Data; unallocated clusters report the backing's extent
    /// (Zero past its end).
    /// </summary>
    public Extent GetExtent(long offset, long maxLength)
    {
        DeviceChecks.Range(this, offset, 1, _path);
        long limit = offset + Math.Min(maxLength, Length - offset);
        var src = SourceOf(Map(offset, out _, out long run));
        long end = Math.Min(limit, offset + run);
        while (end < limit)
        {
            var next = SourceOf(Map(end, out _, out run));
            if (next != src) break;
            end = Math.Min(limit, end + run);
        }
        if (src != Source.Backing) return new Extent(src == Source.Data ? ExtentKind.Data : ExtentKind.Zero, offset, end - offset);
        if (offset >= _backing!.Length) return new Extent(ExtentKind.Zero, offset, end - offset);
        var e = _backing.GetExtent(offset, Math.Min(end, _backing.Length) - offset);
        return new Extent(e.Kind, offset, Math.Min(e.End, end) - offset);
    }

    public void Write(long offset, ReadOnlySpan<byte> buffer) => DeviceChecks.Writable(this, _path);
    public void Flush() { }
    public void Discard(long offset, long length) => DeviceChecks.Writable(this, _path);
    public void WriteZeroes(long offset, long length) => DeviceChecks.Writable(this, _path);

    public void Dispose()
    {
        _backing?.Dispose();
        _file.Dispose();
    }
}
