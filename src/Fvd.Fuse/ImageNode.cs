// One file of the mount: its device plus the attributes we keep in memory (mode/owner/times from SETATTR)
// and a cached count of allocated bytes for st_blocks.
using System.Diagnostics;
using System.Text;
using Fvd.Core.Io;

namespace Fvd.Fuse;

internal sealed class ImageNode
{
    private readonly object _attrLock = new();
    private long _allocatedBytes = -1;
    private long _allocatedAt;        // Stopwatch timestamp of the last count
    private long _minIntervalTicks;   // Stopwatch ticks to wait before counting again
    private int _allocDirty = 1;      // set by writes/discards; cleared when recounted
    private int _counting;

    public ImageNode(ulong nodeId, string name, IBlockDevice device, uint mode, uint uid, uint gid, long nowNs)
        : this(nodeId, new FuseImage(name, device), mode, uid, gid, nowNs) { }

    public ImageNode(ulong nodeId, FuseImage image, uint mode, uint uid, uint gid, long nowNs)
    {
        string name = image.Name;
        var device = image.Device;
        StatusSource = image.Status;
        PassthroughSource = image.Passthrough;
        Locality = image.Locality;
        NodeId = nodeId;
        Name = name;
        NameUtf8 = Encoding.UTF8.GetBytes(name);
        Device = device;
        Mode = mode;
        Uid = uid;
        Gid = gid;
        AtimeNs = nowNs;
        _mtimeNs = nowNs;
        CtimeNs = nowNs;
    }

    public ulong NodeId { get; }
    public string Name { get; }
    public byte[] NameUtf8 { get; }
    public IBlockDevice Device { get; }

    /// <summary>Permission bits only (07777); the type bits are added when reporting.</summary>
    public uint Mode { get; private set; }
    public uint Uid { get; private set; }
    public uint Gid { get; private set; }
    public long AtimeNs { get; private set; }
    public long MtimeNs => Volatile.Read(ref _mtimeNs);
    public long CtimeNs { get; private set; }
    private long _mtimeNs;
    public object AttrLock => _attrLock;

    /// <summary>Extended attributes set on this file, in memory for the life of the mount.</summary>
    public XattrStore Xattrs { get; } = new();

    public IStatusSource? StatusSource { get; }
    public IPassthroughSource? PassthroughSource { get; }
    public IBackingLocality? Locality { get; }

    // FUSE passthrough state, changed under PassthroughLock. The kernel refuses a passthrough open (EIO) while
    // the inode has page-cache opens, and any other open once it has passthrough ones; so the switch happens
    // only when no page-cache open of ours is outstanding, and is never undone.
    public object PassthroughLock { get; } = new();
    /// <summary>The kernel's backing id for PassthroughSource's file; > 0 once every new open passes through.</summary>
    public int BackingId;
    /// <summary>The file passthrough opens use (set with BackingId): its mtime is the image's from then on.</summary>
    public string? PassthroughFile;
    /// <summary>Registering the file failed; this node is served normally for the rest of the mount.</summary>
    public bool PassthroughFailed;
    /// <summary>Opens answered with the page cache (not direct I/O, not passthrough) and not yet released.</summary>
    public int CachedOpens;

    public void SetMode(uint perm) { Mode = perm & 0xFFF; }
    public void SetOwner(uint? uid, uint? gid) { if (uid is { } u) Uid = u; if (gid is { } g) Gid = g; }
    public void SetAtime(long ns) => AtimeNs = ns;
    public void SetMtime(long ns) => Volatile.Write(ref _mtimeNs, ns);
    public void SetCtime(long ns) => CtimeNs = ns;

    /// <summary>Called after every change of content: mtime moves and the allocation count is stale.</summary>
    public void Touched(long nowNs)
    {
        Volatile.Write(ref _mtimeNs, nowNs);
        Volatile.Write(ref _allocDirty, 1);
    }

    /// <summary>Drops set-uid/set-gid after a write, as the kernel would for a local file.</summary>
    public void KillSuidGid()
    {
        if ((Mode & 0xC00) == 0) return;
        lock (_attrLock) Mode &= ~0xC00u;
    }

    /// <summary>
    /// Bytes the device holds as data (for st_blocks), counted with GetExtent when something changed. Counting
    /// is rate-limited in proportion to its cost (at most ~2 % of the time, never more than 4 times a second),
    /// so a cheap device is always exact and an expensive one at most 250 ms stale. Concurrent callers take
    /// the previous value rather than wait.
    /// </summary>
    public long AllocatedBytes()
    {
        long cached = Volatile.Read(ref _allocatedBytes);
        // Writes of passthrough opens never reach us: count again whenever the rate limit allows.
        bool stale = cached < 0 || ((Volatile.Read(ref _allocDirty) != 0 || Volatile.Read(ref BackingId) > 0)
            && Stopwatch.GetTimestamp() - Volatile.Read(ref _allocatedAt) >= Volatile.Read(ref _minIntervalTicks));
        if (!stale || Interlocked.CompareExchange(ref _counting, 1, 0) != 0)
            return cached < 0 ? Device.Length : cached;
        try
        {
            Volatile.Write(ref _allocDirty, 0);
            long t0 = Stopwatch.GetTimestamp();
            long total = CountAllocated(Device);
            long t1 = Stopwatch.GetTimestamp();
            Volatile.Write(ref _allocatedBytes, total);
            Volatile.Write(ref _allocatedAt, t1);
            Volatile.Write(ref _minIntervalTicks, Math.Min((t1 - t0) * 50, Stopwatch.Frequency / 4));
            return total;
        }
        catch (Exception e)
        {
            // A device that cannot tell is reported as fully allocated, which is never an underestimate.
            Console.Error.WriteLine($"fvdmount: {Name}: cannot count allocated blocks: {e.Message}");
            return Device.Length;
        }
        finally
        {
            Volatile.Write(ref _counting, 0);
        }
    }

    internal static long CountAllocated(IBlockDevice dev)
    {
        long len = dev.Length, pos = 0, total = 0;
        while (pos < len)
        {
            var ext = dev.GetExtent(pos, len - pos);
            if (ext.Length <= 0) return total + (len - pos); // a broken answer: do not loop forever
            if (ext.Kind == ExtentKind.Data) total += ext.Length;
            pos += ext.Length;
        }
        return total;
    }
}
