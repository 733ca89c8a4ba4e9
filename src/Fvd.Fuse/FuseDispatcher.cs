// Request bytes in, reply bytes out: parses one FUSE request, calls the image devices, builds the reply in the
// caller's buffer. No kernel, no file descriptors, no threads here, so tests can drive it with byte arrays.
// Thread-safe: several transport threads call Handle concurrently. The hot path (READ/WRITE) allocates nothing.
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using Fvd.Core.Io;
using static Fvd.Fuse.FuseProtocol;

namespace Fvd.Fuse;

public sealed partial class FuseDispatcher
{
    private static readonly byte[] Dot = "."u8.ToArray();
    private static readonly byte[] DotDot = ".."u8.ToArray();
    private static readonly byte[] StatusDirName = ".fvd"u8.ToArray();
    /// <summary>Status-file handles have this bit set; image handles are the node id (plus CachedOpenBit).</summary>
    private const ulong StatusHandleBit = 1UL << 62;
    /// <summary>Marks an image handle answered with the page cache (counted in ImageNode.CachedOpens).</summary>
    private const ulong CachedOpenBit = 1UL << 61;
    /// <summary>An open of a status file reuses the snapshot the last LOOKUP/GETATTR reported the size of.</summary>
    private static readonly long SnapshotReuseTicks = Stopwatch.Frequency;

    private readonly ImageNode[] _nodes; // nodeid = index + 2 (1 is the root directory)
    // The status directory ".fvd" (nodeid _nodes.Length + 2) and its files NAME.json (the ids after it).
    private readonly ulong _statusDirId;
    private readonly StatusNode[] _status;
    private readonly ConcurrentDictionary<ulong, byte[]> _snapshots = new();
    private long _nextStatusHandle;
    private volatile bool _passthroughNegotiated;
    private int _passthroughRefused; // the kernel said no once: every node is served normally from then on
    private readonly FuseOptions _options;
    private readonly uint _dirMode;
    private readonly uint _dirUid, _dirGid;
    private readonly long _startNs;
    private readonly ManualResetEventSlim _initDone = new(false);
    private volatile bool _initialized;
    private ulong _flags;

    public FuseDispatcher(IReadOnlyList<FuseImage> images, FuseOptions options)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        _startNs = NowNs();
        _dirUid = options.Uid ?? Mono.Unix.Native.Syscall.geteuid();
        _dirGid = options.Gid ?? Mono.Unix.Native.Syscall.getegid();
        _dirMode = 0x1FF & ~options.Umask; // 0777 & ~umask
        uint fileMode = 0x1B6 & ~options.Umask; // 0666 & ~umask
        if (options.ReadOnly) fileMode &= ~0x92u; // no write bits on a read-only mount
        var names = new HashSet<string>(StringComparer.Ordinal);
        _nodes = new ImageNode[images.Count];
        for (int i = 0; i < images.Count; i++)
        {
            if (!names.Add(images[i].Name))
                throw new ArgumentException($"two images would both be shown as '{images[i].Name}'", nameof(images));
            _nodes[i] = new ImageNode((ulong)i + 2, images[i], fileMode, _dirUid, _dirGid, _startNs);
        }
        _statusDirId = options.StatusDirectory ? (ulong)_nodes.Length + 2 : 0;
        _status = new StatusNode[options.StatusDirectory ? _nodes.Length : 0];
        for (int i = 0; i < _status.Length; i++)
        {
            string baseName = images[i].Name.EndsWith(".raw", StringComparison.Ordinal) ? images[i].Name[..^4] : images[i].Name;
            _status[i] = new StatusNode(_statusDirId + 1 + (ulong)i, Encoding.UTF8.GetBytes(baseName + ".json"), _nodes[i]);
        }
        InitPartitions(fileMode);
    }

    /// <summary>
    /// Registers a file with the kernel for passthrough (FUSE_DEV_IOC_BACKING_OPEN) and returns its backing id,
    /// or -errno. Set by the transport; without it nothing is passed through.
    /// </summary>
    public Func<string, bool, int>? BackingOpen { get; set; }

    /// <summary>True when the kernel agreed to FUSE passthrough in INIT and has not refused it since.</summary>
    public bool PassthroughAvailable => _passthroughNegotiated && Volatile.Read(ref _passthroughRefused) == 0;

    /// <summary>Set once INIT has been answered successfully.</summary>
    public bool Initialized => _initialized;

    /// <summary>Signalled when INIT has been answered (successfully or not).</summary>
    public WaitHandle InitDone => _initDone.WaitHandle;

    /// <summary>The INIT flags we agreed on with the kernel.</summary>
    public ulong NegotiatedFlags => Volatile.Read(ref _flags);

    /// <summary>Set when the kernel sent DESTROY.</summary>
    public bool Destroyed { get; private set; }

    /// <summary>
    /// Handles one request. Returns the number of reply bytes written to <paramref name="reply"/> (0 when the
    /// opcode takes no reply). The reply buffer must hold BufferSize bytes for full-size READs. Never throws.
    /// </summary>
    public int Handle(ReadOnlySpan<byte> request, Span<byte> reply)
    {
        if (!_options.Debug) return HandleCore(request, reply);
        long t0 = Stopwatch.GetTimestamp();
        int n = HandleCore(request, reply);
        Trace(request, reply, n, Stopwatch.GetElapsedTime(t0));
        return n;
    }

    private int HandleCore(ReadOnlySpan<byte> req, Span<byte> reply)
    {
        // Without the unique id there is nothing to answer; the kernel never sends this.
        if (req.Length < 16) { Console.Error.WriteLine($"fvdmount: dropped a {req.Length}-byte request"); return 0; }
        ulong unique = U64(req, InHeader.Unique);
        if (req.Length < InHeaderSize || U32(req, InHeader.Len) != (uint)req.Length) return Error(reply, unique, Errno.EINVAL);
        uint op = U32(req, InHeader.Opcode);
        ulong nodeId = U64(req, InHeader.NodeId);
        int extLen = BinaryPrimitives.ReadUInt16LittleEndian(req[InHeader.TotalExtLen..]) * 8; // extensions sit after the body
        if (InHeaderSize + extLen > req.Length) return Error(reply, unique, Errno.EINVAL);
        var body = req[InHeaderSize..(req.Length - extLen)];

        if (!_initialized && op != INIT)
            return op is FORGET or BATCH_FORGET or INTERRUPT ? 0 : Error(reply, unique, Errno.EIO);
        try
        {
            return op switch
            {
                INIT => Init(body, reply, unique),
                LOOKUP => Lookup(nodeId, body, reply, unique),
                FORGET or BATCH_FORGET => 0, // inodes are static
                INTERRUPT => Interrupt(body, reply),
                GETATTR => GetAttr(nodeId, reply, unique),
                SETATTR => SetAttr(nodeId, body, reply, unique),
                OPEN => Open(nodeId, body, reply, unique),
                READ => Read(nodeId, body, reply, unique),
                WRITE => Write(nodeId, body, reply, unique),
                FLUSH => NodeOk(nodeId, reply, unique, wantDir: false),
                RELEASE => Release(nodeId, body, reply, unique),
                FSYNC => Fsync(nodeId, body, reply, unique),
                OPENDIR => OpenDir(nodeId, reply, unique),
                READDIR => ReadDir(nodeId, body, reply, unique, plus: false),
                READDIRPLUS => ReadDir(nodeId, body, reply, unique, plus: true),
                RELEASEDIR or FSYNCDIR => NodeOk(nodeId, reply, unique, wantDir: true),
                STATFS => StatFs(reply, unique),
                ACCESS => Access(nodeId, body, req, reply, unique),
                FALLOCATE => Fallocate(nodeId, body, reply, unique),
                LSEEK => Lseek(nodeId, body, reply, unique),
                GETXATTR => GetXattr(nodeId, body, reply, unique, list: false),
                LISTXATTR => GetXattr(nodeId, body, reply, unique, list: true),
                SETXATTR => SetXattr(nodeId, body, reply, unique),
                REMOVEXATTR => RemoveXattr(nodeId, body, reply, unique),
                // The directory is fixed: the kernel passes "Operation not permitted" (or EROFS) to the caller.
                MKNOD or MKDIR or UNLINK or RMDIR or RENAME or RENAME2 or LINK or SYMLINK or CREATE or TMPFILE
                    => Error(reply, unique, _options.ReadOnly ? Errno.EROFS : Errno.EPERM),
                DESTROY => Destroy(reply, unique),
                _ => Error(reply, unique, Errno.ENOSYS),
            };
        }
        catch (Exception e)
        {
            return Error(reply, unique, Errno.From(e, writing: op == WRITE));
        }
    }

    // ---- INIT ----------------------------------------------------------------------------------------------

    private int Init(ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        try
        {
            if (body.Length < 8) return Error(reply, unique, Errno.EINVAL);
            uint major = U32(body, InitIn.Major), minor = U32(body, InitIn.Minor);
            var o = reply.Slice(OutHeaderSize, InitOutSize);
            o.Clear();
            if (major > KernelMajor)
            {
                // Newer major: answer ours and the kernel retries INIT with it.
                W32(o, InitOut.Major, KernelMajor);
                W32(o, InitOut.Minor, OurMinor);
                return Ok(reply, unique, InitOutSize);
            }
            if (major < KernelMajor || minor < MinKernelMinor || body.Length < InitInMinSize)
            {
                Console.Error.WriteLine($"fvdmount: kernel FUSE protocol {major}.{minor} is too old (need 7.{MinKernelMinor})");
                return Error(reply, unique, Errno.EPROTO);
            }
            uint maxReadahead = U32(body, InitIn.MaxReadahead);
            ulong kernelFlags = U32(body, InitIn.Flags);
            if ((kernelFlags & INIT_EXT) != 0 && body.Length >= InitIn.Flags2 + 4) kernelFlags |= (ulong)U32(body, InitIn.Flags2) << 32;

            ulong want = ASYNC_READ | BIG_WRITES | ASYNC_DIO | MAX_PAGES | PARALLEL_DIROPS | DO_READDIRPLUS
                         | HANDLE_KILLPRIV_V2 | INIT_EXT | DIRECT_IO_ALLOW_MMAP;
            if (_options.Passthrough && !_options.Partitions && _nodes.Any(n => n.PassthroughSource is not null)) want |= PASSTHROUGH;
            ulong flags = want & kernelFlags;
            _passthroughNegotiated = (flags & PASSTHROUGH) != 0;
            if ((want & PASSTHROUGH) != 0 && !_passthroughNegotiated)
                Console.Error.WriteLine("fvdmount: the kernel does not offer FUSE passthrough (needs Linux 6.9+ with CONFIG_FUSE_PASSTHROUGH); serving every open normally");
            W32(o, InitOut.Major, KernelMajor);
            W32(o, InitOut.Minor, Math.Min(minor, OurMinor));
            W32(o, InitOut.MaxReadahead, Math.Min(maxReadahead, 128 * 1024));
            W32(o, InitOut.Flags, (uint)flags);
            W16(o, InitOut.MaxBackground, 64);   // max_background: qemu at high queue depth needs more than the default 12
            W16(o, InitOut.CongestionThreshold, 48);   // congestion_threshold: 75 % of that
            W32(o, InitOut.MaxWrite, MaxWrite);
            W32(o, InitOut.TimeGran, 1);    // time_gran: we keep nanoseconds
            W16(o, InitOut.MaxPages, MaxWrite / 4096); // max_pages
            W32(o, InitOut.Flags2, (uint)(flags >> 32)); // flags2
            if (_passthroughNegotiated) W32(o, InitOut.MaxStackDepth, MaxStackDepth);
            Volatile.Write(ref _flags, flags);
            _initialized = true;
            return Ok(reply, unique, InitOutSize);
        }
        finally
        {
            _initDone.Set();
        }
    }

    private int Destroy(Span<byte> reply, ulong unique)
    {
        Destroyed = true;
        return Ok(reply, unique, 0);
    }

    // ---- names and attributes ------------------------------------------------------------------------------

    private int Lookup(ulong parent, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        int nul = body.IndexOf((byte)0);
        var name = nul < 0 ? body : body[..nul];
        ulong found = 0;
        if (parent == RootId)
        {
            RefreshPartitions();
            foreach (var n in _nodes)
                if (name.SequenceEqual(n.NameUtf8)) { found = n.NodeId; break; }
            if (found == 0)
                foreach (var n in _partitionList)
                    if (name.SequenceEqual(n.NameUtf8)) { found = n.NodeId; break; }
            if (found == 0 && _statusDirId != 0 && name.SequenceEqual(StatusDirName)) found = _statusDirId;
        }
        else if (parent == _statusDirId && _statusDirId != 0)
        {
            foreach (var n in _status)
                if (name.SequenceEqual(n.NameUtf8)) { found = n.NodeId; break; }
        }
        else return Error(reply, unique, Exists(parent) ? Errno.ENOTDIR : Errno.ENOENT);
        if (found == 0) return Error(reply, unique, Errno.ENOENT);
        FillEntry(reply.Slice(OutHeaderSize, EntryOutSize), found);
        return Ok(reply, unique, EntryOutSize);
    }

    private int GetAttr(ulong nodeId, Span<byte> reply, ulong unique)
    {
        if (!Exists(nodeId)) return Error(reply, unique, Errno.ENOENT);
        FillAttrOut(reply.Slice(OutHeaderSize, AttrOutSize), nodeId);
        return Ok(reply, unique, AttrOutSize);
    }

    private int SetAttr(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < SetattrInSize) return Error(reply, unique, Errno.EINVAL);
        uint valid = U32(body, SetattrIn.Valid);
        if (nodeId == RootId)
        {
            // The directory's attributes are fixed; accepting times keeps `touch` quiet.
            if ((valid & FATTR_SIZE) != 0) return Error(reply, unique, Errno.EISDIR);
            if ((valid & (FATTR_MODE | FATTR_UID | FATTR_GID)) != 0) return Error(reply, unique, Errno.EPERM);
            FillAttrOut(reply.Slice(OutHeaderSize, AttrOutSize), nodeId);
            return Ok(reply, unique, AttrOutSize);
        }
        if (!Find(nodeId, out var node))
            return Error(reply, unique, !Exists(nodeId) ? Errno.ENOENT : _options.ReadOnly ? Errno.EROFS : Errno.EPERM); // the status files are fixed
        if ((valid & FATTR_SIZE) != 0 && (long)U64(body, SetattrIn.Size) != node.Device.Length)
        {
            // A virtual disk has a fixed size: truncation (dd without conv=notrunc, O_TRUNC) would destroy it
            // and growth is not supported. Setting the current size is a no-op and allowed.
            return Error(reply, unique, Errno.EPERM);
        }
        long now = NowNs();
        lock (node.AttrLock)
        {
            if ((valid & FATTR_MODE) != 0) node.SetMode(U32(body, SetattrIn.Mode));
            if ((valid & FATTR_KILL_SUIDGID) != 0) node.SetMode(node.Mode & ~0xC00u);
            uint? uid = (valid & FATTR_UID) != 0 ? U32(body, SetattrIn.Uid) : null;
            uint? gid = (valid & FATTR_GID) != 0 ? U32(body, SetattrIn.Gid) : null;
            node.SetOwner(uid, gid);
            if ((valid & FATTR_ATIME_NOW) != 0) node.SetAtime(now);
            else if ((valid & FATTR_ATIME) != 0) node.SetAtime(TimeNs(U64(body, SetattrIn.Atime), U32(body, SetattrIn.AtimeNsec)));
            if ((valid & FATTR_MTIME_NOW) != 0) node.SetMtime(now);
            else if ((valid & FATTR_MTIME) != 0) node.SetMtime(TimeNs(U64(body, SetattrIn.Mtime), U32(body, SetattrIn.MtimeNsec)));
            if ((valid & FATTR_CTIME) != 0) node.SetCtime(TimeNs(U64(body, SetattrIn.Ctime), U32(body, SetattrIn.CtimeNsec)));
            else node.SetCtime(now);
        }
        FillAttrOut(reply.Slice(OutHeaderSize, AttrOutSize), nodeId);
        return Ok(reply, unique, AttrOutSize);
    }

    private int Access(ulong nodeId, ReadOnlySpan<byte> body, ReadOnlySpan<byte> req, Span<byte> reply, ulong unique)
    {
        if (body.Length < AccessInSize) return Error(reply, unique, Errno.EINVAL);
        uint mask = U32(body, AccessIn.Mask) & 7; // R_OK 4, W_OK 2, X_OK 1
        uint uid = U32(req, InHeader.Uid), gid = U32(req, InHeader.Gid);
        uint mode, owner, group;
        if (nodeId == RootId) { mode = _dirMode; owner = _dirUid; group = _dirGid; }
        else if (Find(nodeId, out var node)) { mode = node.Mode; owner = node.Uid; group = node.Gid; }
        else if (Exists(nodeId))
        {
            if ((mask & 2) != 0) return Error(reply, unique, Errno.EACCES); // the status directory is read-only
            mode = nodeId == _statusDirId ? 0x16Du : 0x124u; owner = _dirUid; group = _dirGid; // 0555 / 0444
        }
        else return Error(reply, unique, Errno.ENOENT);
        if ((mask & 2) != 0 && _options.ReadOnly) return Error(reply, unique, Errno.EROFS);
        uint granted = uid == 0 ? 6u | ((mode & 0x49) != 0 ? 1u : 0u)
            : uid == owner ? (mode >> 6) & 7 : gid == group ? (mode >> 3) & 7 : mode & 7;
        return (mask & ~granted) == 0 ? Ok(reply, unique, 0) : Error(reply, unique, Errno.EACCES);
    }

    private int StatFs(Span<byte> reply, ulong unique)
    {
        const long bsize = 4096;
        long total = 0, used = 0;
        foreach (var n in _nodes)
        {
            total += n.Device.Length;
            used += n.AllocatedBytes();
        }
        long blocks = (total + bsize - 1) / bsize, free = Math.Max(0, blocks - (used + bsize - 1) / bsize);
        var o = reply.Slice(OutHeaderSize, StatfsOutSize);
        o.Clear();
        W64(o, StatfsOut.Blocks, (ulong)blocks);
        W64(o, StatfsOut.Bfree, (ulong)free); // "free" = not yet allocated in the images
        W64(o, StatfsOut.Bavail, (ulong)free);
        W64(o, StatfsOut.Files, (ulong)(_nodes.Length + _status.Length + (_statusDirId != 0 ? 2 : 1)));
        W64(o, StatfsOut.Ffree, 0);
        W32(o, StatfsOut.Bsize, (uint)bsize);
        W32(o, StatfsOut.NameLen, 255);
        W32(o, StatfsOut.Frsize, (uint)bsize);
        return Ok(reply, unique, StatfsOutSize);
    }

    // ---- files ---------------------------------------------------------------------------------------------

    private int Open(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < OpenInSize) return Error(reply, unique, Errno.EINVAL);
        if (nodeId == RootId || (nodeId == _statusDirId && _statusDirId != 0)) return Error(reply, unique, Errno.EISDIR);
        uint flags = U32(body, OpenIn.Flags);
        if (!Find(nodeId, out var node))
            return FindStatus(nodeId, out var st) ? OpenStatus(st, flags, reply, unique) : Error(reply, unique, Errno.ENOENT);
        if ((flags & O_ACCMODE) != O_RDONLY && (_options.ReadOnly || node.Device.IsReadOnly))
            return Error(reply, unique, Errno.EROFS);
        var o = reply.Slice(OutHeaderSize, OpenOutSize);
        o.Clear();
        ulong fh = nodeId;
        bool direct = _options.DirectIo || _options.Partitions || (flags & O_DIRECT) != 0;
        int backingId = 0;
        if (node.PassthroughSource is not null && !_options.Partitions)
        {
            // Decide and count under the lock: a page-cache open must never race with the switch.
            lock (node.PassthroughLock)
            {
                backingId = PassthroughFor(node);
                if (backingId <= 0 && !direct) { Interlocked.Increment(ref node.CachedOpens); fh |= CachedOpenBit; }
            }
        }
        uint openFlags;
        if (backingId > 0)
        {
            // The kernel reads and writes the data file itself. Only DIRECT_IO/PARALLEL_DIRECT_WRITES/NOFLUSH
            // may accompany PASSTHROUGH, KEEP_CACHE makes open(2) fail with EIO and DIRECT_IO would send reads
            // and writes to us again; an O_DIRECT opener gets O_DIRECT on the data file.
            openFlags = FOPEN_PASSTHROUGH;
            W32(o, OpenOut.BackingId, (uint)backingId);
        }
        else if (direct)
        {
            // Direct I/O for O_DIRECT openers (or all, if configured): requests arrive exactly as issued and
            // writes may run in parallel.
            openFlags = FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
        }
        else
        {
            // The page cache stays valid because only this mount writes. Counted above for images that may
            // pass through: the switch waits until every such open is released (the kernel refuses to mix them).
            openFlags = FOPEN_KEEP_CACHE;
        }
        W64(o, OpenOut.Fh, fh);
        W32(o, OpenOut.OpenFlags, openFlags);
        return Ok(reply, unique, OpenOutSize);
    }

    private int Release(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        ulong fh = body.Length >= 8 ? U64(body, ReleaseIn.Fh) : 0;
        if ((fh & StatusHandleBit) != 0)
        {
            _snapshots.TryRemove(fh, out _);
            return Ok(reply, unique, 0);
        }
        if (!Find(nodeId, out var node)) return Error(reply, unique, Errno.EBADF);
        if ((fh & CachedOpenBit) != 0) Interlocked.Decrement(ref node.CachedOpens);
        return Ok(reply, unique, 0);
    }

    private int Read(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < ReadInSize) return Error(reply, unique, Errno.EINVAL);
        if (nodeId == RootId) return Error(reply, unique, Errno.EISDIR);
        if (!Find(nodeId, out var node)) return FindStatus(nodeId, out _) ? ReadStatus(body, reply, unique) : Error(reply, unique, Errno.ENOENT);
        long offset = (long)U64(body, ReadIn.Offset);
        uint size = U32(body, ReadIn.Size);
        if (offset < 0 || size > reply.Length - OutHeaderSize) return Error(reply, unique, Errno.EINVAL);
        long len = node.Device.Length;
        int n = offset >= len ? 0 : (int)Math.Min(size, len - offset); // short or empty read at the end
        if (n > 0) node.Device.Read(offset, reply.Slice(OutHeaderSize, n));
        return Ok(reply, unique, n);
    }

    private int Write(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < WriteInSize) return Error(reply, unique, Errno.EINVAL);
        if (nodeId == RootId) return Error(reply, unique, Errno.EISDIR);
        if (!Find(nodeId, out var node)) return Error(reply, unique, Exists(nodeId) ? Errno.EBADF : Errno.ENOENT);
        long offset = (long)U64(body, WriteIn.Offset);
        uint size = U32(body, WriteIn.Size);
        if (offset < 0 || size > body.Length - WriteInSize) return Error(reply, unique, Errno.EINVAL);
        if (_options.ReadOnly) return Error(reply, unique, Errno.EROFS);
        long len = node.Device.Length;
        // Like a block device: a write that starts at or past the end fails, one that straddles it is short.
        if (size > 0 && offset >= len) return Error(reply, unique, Errno.ENOSPC);
        int n = (int)Math.Min(size, len - Math.Min(offset, len));
        if (n > 0)
        {
            node.Device.Write(offset, body.Slice(WriteInSize, n));
            node.Touched(NowNs());
            NoteWrite(node, offset, n);
            // O_DSYNC/O_SYNC opens, RWF_DSYNC/RWF_SYNC writes: with direct I/O the kernel sends no FSYNC after
            // them, only this flag, so the write and its metadata must be durable before the reply.
            if ((U32(body, WriteIn.Flags) & O_DSYNC) != 0) node.Device.Flush();
        }
        if ((U32(body, WriteIn.WriteFlags) & WRITE_KILL_SUIDGID) != 0) node.KillSuidGid();
        var o = reply.Slice(OutHeaderSize, WriteOutSize);
        W32(o, WriteOut.Size, (uint)n);
        W32(o, WriteOut.Padding, 0);
        return Ok(reply, unique, WriteOutSize);
    }

    private int Fsync(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < FsyncInSize) return Error(reply, unique, Errno.EINVAL);
        if (!Find(nodeId, out var node))
            return FindStatus(nodeId, out _) ? Ok(reply, unique, 0) : Error(reply, unique, Exists(nodeId) ? Errno.EISDIR : Errno.ENOENT);
        // Also after passthrough writes: Flush makes the data file durable (fdatasync) before we answer.
        node.Device.Flush(); // durability: the reply goes out only after this returns
        return Ok(reply, unique, 0);
    }

    private int Fallocate(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < FallocateInSize) return Error(reply, unique, Errno.EINVAL);
        if (nodeId == RootId) return Error(reply, unique, Errno.EISDIR);
        if (!Find(nodeId, out var node)) return Error(reply, unique, Exists(nodeId) ? Errno.EOPNOTSUPP : Errno.ENOENT);
        long offset = (long)U64(body, FallocateIn.Offset), length = (long)U64(body, FallocateIn.Length);
        uint mode = U32(body, FallocateIn.Mode);
        if (offset < 0 || length <= 0 || length > long.MaxValue - offset) return Error(reply, unique, Errno.EINVAL);
        if (_options.ReadOnly) return Error(reply, unique, Errno.EROFS);
        long devLen = node.Device.Length;
        bool keepSize = (mode & FALLOC_KEEP_SIZE) != 0;
        // Without KEEP_SIZE a range past the end would grow the file, which a virtual disk cannot do.
        if (!keepSize && offset + length > devLen) return Error(reply, unique, Errno.ENOSPC);
        long end = Math.Min(offset + length, devLen);
        long clamped = Math.Max(0, end - offset);
        switch (mode)
        {
            case FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE:
                if (clamped > 0) { node.Device.Discard(offset, clamped); node.Touched(NowNs()); NoteWrite(node, offset, clamped); }
                break;
            case FALLOC_ZERO_RANGE:
            case FALLOC_ZERO_RANGE | FALLOC_KEEP_SIZE:
                if (clamped > 0) { node.Device.WriteZeroes(offset, clamped); node.Touched(NowNs()); NoteWrite(node, offset, clamped); }
                break;
            case 0:
            case FALLOC_KEEP_SIZE:
                break; // preallocation: the range already exists; the image allocates when it is written
            default:
                return Error(reply, unique, Errno.EOPNOTSUPP); // collapse/insert/unshare, punch without keep-size
        }
        return Ok(reply, unique, 0);
    }

    private int Lseek(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < LseekInSize) return Error(reply, unique, Errno.EINVAL);
        if (nodeId == RootId) return Error(reply, unique, Errno.EISDIR);
        // Never ENOSYS here: that would turn lseek off for the whole mount.
        if (!Find(nodeId, out var node)) return Error(reply, unique, Exists(nodeId) ? Errno.EINVAL : Errno.ENOENT);
        long offset = (long)U64(body, LseekIn.Offset);
        uint whence = U32(body, LseekIn.Whence);
        if (whence != SEEK_DATA && whence != SEEK_HOLE) return Error(reply, unique, Errno.EINVAL);
        var dev = node.Device;
        long len = dev.Length;
        if (offset < 0 || offset >= len) return Error(reply, unique, Errno.ENXIO);
        var want = whence == SEEK_DATA ? ExtentKind.Data : ExtentKind.Zero;
        long pos = offset, found = -1;
        while (pos < len)
        {
            var ext = dev.GetExtent(pos, len - pos);
            if (ext.Kind == want) { found = pos; break; }
            if (ext.Length <= 0) break;
            pos += ext.Length;
        }
        if (found < 0)
        {
            if (whence == SEEK_DATA) return Error(reply, unique, Errno.ENXIO); // only holes up to the end
            found = len; // the end of the file counts as a hole
        }
        W64(reply.Slice(OutHeaderSize, LseekOutSize), LseekOut.Offset, (ulong)found);
        return Ok(reply, unique, LseekOutSize);
    }
}
