// Request bytes in, reply bytes out: parses one FUSE request, calls the image devices, builds the reply in the
// caller's buffer. No kernel, no file descriptors, no threads here, so tests can drive it with byte arrays.
// Thread-safe: several transport threads call Handle concurrently. The hot path (READ/WRITE) allocates nothing.
using System.Buffers.Binary;
using System.Diagnostics;
using Fvd.Core.Io;
using static Fvd.Fuse.FuseProtocol;

namespace Fvd.Fuse;

public sealed class FuseDispatcher
{
    private static readonly byte[] Dot = "."u8.ToArray();
    private static readonly byte[] DotDot = ".."u8.ToArray();

    private readonly ImageNode[] _nodes; // nodeid = index + 2 (1 is the root directory)
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
        _dirUid = options.Uid ?? Native.geteuid();
        _dirGid = options.Gid ?? Native.getegid();
        _dirMode = 0x1FF & ~options.Umask; // 0777 & ~umask
        uint fileMode = 0x1B6 & ~options.Umask; // 0666 & ~umask
        if (options.ReadOnly) fileMode &= ~0x92u; // no write bits on a read-only mount
        var names = new HashSet<string>(StringComparer.Ordinal);
        _nodes = new ImageNode[images.Count];
        for (int i = 0; i < images.Count; i++)
        {
            if (!names.Add(images[i].Name))
                throw new ArgumentException($"two images would both be shown as '{images[i].Name}'", nameof(images));
            _nodes[i] = new ImageNode((ulong)i + 2, images[i].Name, images[i].Device, fileMode, _dirUid, _dirGid, _startNs);
        }
    }

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
        ulong unique = U64(req, 8);
        if (req.Length < InHeaderSize || U32(req, 0) != (uint)req.Length) return Error(reply, unique, Errno.EINVAL);
        uint op = U32(req, 4);
        ulong nodeId = U64(req, 16);
        int extLen = BinaryPrimitives.ReadUInt16LittleEndian(req[36..]) * 8; // extensions sit after the body
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
                FORGET or BATCH_FORGET or INTERRUPT => 0, // inodes are static; interrupts: let the request finish
                GETATTR => GetAttr(nodeId, reply, unique),
                SETATTR => SetAttr(nodeId, body, reply, unique),
                OPEN => Open(nodeId, body, reply, unique),
                READ => Read(nodeId, body, reply, unique),
                WRITE => Write(nodeId, body, reply, unique),
                FLUSH or RELEASE => NodeOk(nodeId, reply, unique, wantDir: false),
                FSYNC => Fsync(nodeId, body, reply, unique),
                OPENDIR => OpenDir(nodeId, reply, unique),
                READDIR => ReadDir(nodeId, body, reply, unique, plus: false),
                READDIRPLUS => ReadDir(nodeId, body, reply, unique, plus: true),
                RELEASEDIR or FSYNCDIR => NodeOk(nodeId, reply, unique, wantDir: true),
                STATFS => StatFs(reply, unique),
                ACCESS => Access(nodeId, body, req, reply, unique),
                FALLOCATE => Fallocate(nodeId, body, reply, unique),
                LSEEK => Lseek(nodeId, body, reply, unique),
                GETXATTR => Find(nodeId, out _) ? Error(reply, unique, Errno.ENODATA) : Error(reply, unique, Errno.ENOENT),
                LISTXATTR => ListXattr(nodeId, body, reply, unique),
                SETXATTR => Error(reply, unique, Errno.EOPNOTSUPP),
                REMOVEXATTR => Error(reply, unique, Errno.ENODATA),
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
            uint major = U32(body, 0), minor = U32(body, 4);
            var o = reply.Slice(OutHeaderSize, InitOutSize);
            o.Clear();
            if (major > KernelMajor)
            {
                // Newer major: answer ours and the kernel retries INIT with it.
                W32(o, 0, KernelMajor);
                W32(o, 4, OurMinor);
                return Ok(reply, unique, InitOutSize);
            }
            if (major < KernelMajor || minor < MinKernelMinor || body.Length < InitInMinSize)
            {
                Console.Error.WriteLine($"fvdmount: kernel FUSE protocol {major}.{minor} is too old (need 7.{MinKernelMinor})");
                return Error(reply, unique, Errno.EPROTO);
            }
            uint maxReadahead = U32(body, 8);
            ulong kernelFlags = U32(body, 12);
            if ((kernelFlags & INIT_EXT) != 0 && body.Length >= 20) kernelFlags |= (ulong)U32(body, 16) << 32;

            ulong want = ASYNC_READ | BIG_WRITES | ASYNC_DIO | MAX_PAGES | PARALLEL_DIROPS | DO_READDIRPLUS
                         | HANDLE_KILLPRIV_V2 | INIT_EXT | DIRECT_IO_ALLOW_MMAP;
            ulong flags = want & kernelFlags;
            W32(o, 0, KernelMajor);
            W32(o, 4, Math.Min(minor, OurMinor));
            W32(o, 8, Math.Min(maxReadahead, 128 * 1024));
            W32(o, 12, (uint)flags);
            W16(o, 16, 64);   // max_background: qemu at high queue depth needs more than the default 12
            W16(o, 18, 48);   // congestion_threshold: 75 % of that
            W32(o, 20, MaxWrite);
            W32(o, 24, 1);    // time_gran: we keep nanoseconds
            W16(o, 28, MaxWrite / 4096); // max_pages
            W32(o, 32, (uint)(flags >> 32)); // flags2
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
        if (parent != RootId) return Error(reply, unique, Find(parent, out _) ? Errno.ENOTDIR : Errno.ENOENT);
        int nul = body.IndexOf((byte)0);
        var name = nul < 0 ? body : body[..nul];
        foreach (var n in _nodes)
        {
            if (name.SequenceEqual(n.NameUtf8))
            {
                FillEntry(reply.Slice(OutHeaderSize, EntryOutSize), n.NodeId);
                return Ok(reply, unique, EntryOutSize);
            }
        }
        return Error(reply, unique, Errno.ENOENT);
    }

    private int GetAttr(ulong nodeId, Span<byte> reply, ulong unique)
    {
        if (nodeId != RootId && !Find(nodeId, out _)) return Error(reply, unique, Errno.ENOENT);
        FillAttrOut(reply.Slice(OutHeaderSize, AttrOutSize), nodeId);
        return Ok(reply, unique, AttrOutSize);
    }

    private int SetAttr(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < SetattrInSize) return Error(reply, unique, Errno.EINVAL);
        uint valid = U32(body, 0);
        if (nodeId == RootId)
        {
            // The directory's attributes are fixed; accepting times keeps `touch` quiet.
            if ((valid & FATTR_SIZE) != 0) return Error(reply, unique, Errno.EISDIR);
            if ((valid & (FATTR_MODE | FATTR_UID | FATTR_GID)) != 0) return Error(reply, unique, Errno.EPERM);
            FillAttrOut(reply.Slice(OutHeaderSize, AttrOutSize), nodeId);
            return Ok(reply, unique, AttrOutSize);
        }
        if (!Find(nodeId, out var node)) return Error(reply, unique, Errno.ENOENT);
        if ((valid & FATTR_SIZE) != 0 && (long)U64(body, 16) != node.Device.Length)
        {
            // A virtual disk has a fixed size: truncation (dd without conv=notrunc, O_TRUNC) would destroy it
            // and growth is not supported. Setting the current size is a no-op and allowed.
            return Error(reply, unique, Errno.EPERM);
        }
        long now = NowNs();
        lock (node.AttrLock)
        {
            if ((valid & FATTR_MODE) != 0) node.SetMode(U32(body, 68));
            if ((valid & FATTR_KILL_SUIDGID) != 0) node.SetMode(node.Mode & ~0xC00u);
            uint? uid = (valid & FATTR_UID) != 0 ? U32(body, 76) : null;
            uint? gid = (valid & FATTR_GID) != 0 ? U32(body, 80) : null;
            node.SetOwner(uid, gid);
            if ((valid & FATTR_ATIME_NOW) != 0) node.SetAtime(now);
            else if ((valid & FATTR_ATIME) != 0) node.SetAtime(TimeNs(U64(body, 32), U32(body, 56)));
            if ((valid & FATTR_MTIME_NOW) != 0) node.SetMtime(now);
            else if ((valid & FATTR_MTIME) != 0) node.SetMtime(TimeNs(U64(body, 40), U32(body, 60)));
            if ((valid & FATTR_CTIME) != 0) node.SetCtime(TimeNs(U64(body, 48), U32(body, 64)));
            else node.SetCtime(now);
        }
        FillAttrOut(reply.Slice(OutHeaderSize, AttrOutSize), nodeId);
        return Ok(reply, unique, AttrOutSize);
    }

    private int Access(ulong nodeId, ReadOnlySpan<byte> body, ReadOnlySpan<byte> req, Span<byte> reply, ulong unique)
    {
        if (body.Length < AccessInSize) return Error(reply, unique, Errno.EINVAL);
        uint mask = U32(body, 0) & 7; // R_OK 4, W_OK 2, X_OK 1
        uint uid = U32(req, 24), gid = U32(req, 28);
        uint mode, owner, group;
        if (nodeId == RootId) { mode = _dirMode; owner = _dirUid; group = _dirGid; }
        else if (Find(nodeId, out var node)) { mode = node.Mode; owner = node.Uid; group = node.Gid; }
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
        W64(o, 0, (ulong)blocks);
        W64(o, 8, (ulong)free); // "free" = not yet allocated in the images
        W64(o, 16, (ulong)free);
        W64(o, 24, (ulong)_nodes.Length + 1);
        W64(o, 32, 0);
        W32(o, 40, (uint)bsize);
        W32(o, 44, 255);
        W32(o, 48, (uint)bsize);
        return Ok(reply, unique, StatfsOutSize);
    }

    private int ListXattr(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < GetxattrInSize) return Error(reply, unique, Errno.EINVAL);
        if (nodeId != RootId && !Find(nodeId, out _)) return Error(reply, unique, Errno.ENOENT);
        if (U32(body, 0) != 0) return Ok(reply, unique, 0); // an empty list
        var o = reply.Slice(OutHeaderSize, GetxattrOutSize);
        o.Clear(); // size needed: 0
        return Ok(reply, unique, GetxattrOutSize);
    }

    // ---- files ---------------------------------------------------------------------------------------------

    private int Open(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < OpenInSize) return Error(reply, unique, Errno.EINVAL);
        if (nodeId == RootId) return Error(reply, unique, Errno.EISDIR);
        if (!Find(nodeId, out var node)) return Error(reply, unique, Errno.ENOENT);
        uint flags = U32(body, 0);
        if ((flags & O_ACCMODE) != O_RDONLY && (_options.ReadOnly || node.Device.IsReadOnly))
            return Error(reply, unique, Errno.EROFS);
        var o = reply.Slice(OutHeaderSize, OpenOutSize);
        o.Clear();
        W64(o, 0, nodeId);
        // Direct I/O for O_DIRECT openers (or all, if configured): requests arrive exactly as issued and writes
        // may run in parallel. Others share the page cache, which stays valid because only this mount writes.
        uint openFlags = _options.DirectIo || (flags & O_DIRECT) != 0
            ? FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES
            : FOPEN_KEEP_CACHE;
        W32(o, 8, openFlags);
        return Ok(reply, unique, OpenOutSize);
    }

    private int Read(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < ReadInSize) return Error(reply, unique, Errno.EINVAL);
        if (nodeId == RootId) return Error(reply, unique, Errno.EISDIR);
        if (!Find(nodeId, out var node)) return Error(reply, unique, Errno.ENOENT);
        long offset = (long)U64(body, 8);
        uint size = U32(body, 16);
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
        if (!Find(nodeId, out var node)) return Error(reply, unique, Errno.ENOENT);
        long offset = (long)U64(body, 8);
        uint size = U32(body, 16);
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
        }
        if ((U32(body, 20) & WRITE_KILL_SUIDGID) != 0) node.KillSuidGid();
        var o = reply.Slice(OutHeaderSize, WriteOutSize);
        W32(o, 0, (uint)n);
        W32(o, 4, 0);
        return Ok(reply, unique, WriteOutSize);
    }

    private int Fsync(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < FsyncInSize) return Error(reply, unique, Errno.EINVAL);
        if (!Find(nodeId, out var node)) return Error(reply, unique, nodeId == RootId ? Errno.EISDIR : Errno.ENOENT);
        node.Device.Flush(); // durability: the reply goes out only after this returns
        return Ok(reply, unique, 0);
    }

    private int Fallocate(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < FallocateInSize) return Error(reply, unique, Errno.EINVAL);
        if (nodeId == RootId) return Error(reply, unique, Errno.EISDIR);
        if (!Find(nodeId, out var node)) return Error(reply, unique, Errno.ENOENT);
        long offset = (long)U64(body, 8), length = (long)U64(body, 16);
        uint mode = U32(body, 24);
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
                if (clamped > 0) { node.Device.Discard(offset, clamped); node.Touched(NowNs()); }
                break;
            case FALLOC_ZERO_RANGE:
            case FALLOC_ZERO_RANGE | FALLOC_KEEP_SIZE:
                if (clamped > 0) { node.Device.WriteZeroes(offset, clamped); node.Touched(NowNs()); }
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
        if (!Find(nodeId, out var node)) return Error(reply, unique, Errno.ENOENT);
        long offset = (long)U64(body, 8);
        uint whence = U32(body, 16);
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
        W64(reply.Slice(OutHeaderSize, LseekOutSize), 0, (ulong)found);
        return Ok(reply, unique, LseekOutSize);
    }

    // ---- the directory -------------------------------------------------------------------------------------

    private int OpenDir(ulong nodeId, Span<byte> reply, ulong unique)
    {
        if (nodeId != RootId) return Error(reply, unique, Find(nodeId, out _) ? Errno.ENOTDIR : Errno.ENOENT);
        var o = reply.Slice(OutHeaderSize, OpenOutSize);
        o.Clear();
        return Ok(reply, unique, OpenOutSize);
    }

    private int ReadDir(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique, bool plus)
    {
        if (body.Length < ReadInSize) return Error(reply, unique, Errno.EINVAL);
        if (nodeId != RootId) return Error(reply, unique, Find(nodeId, out _) ? Errno.ENOTDIR : Errno.ENOENT);
        long start = (long)U64(body, 8);
        uint size = U32(body, 16);
        if (size > reply.Length - OutHeaderSize) return Error(reply, unique, Errno.EINVAL);
        var o = reply.Slice(OutHeaderSize, (int)size);
        int used = 0;
        long total = _nodes.Length + 2; // ".", "..", the images; each entry's "off" is the cookie of the next
        for (long i = Math.Max(0, start); i < total; i++)
        {
            byte[] name = i == 0 ? Dot : i == 1 ? DotDot : _nodes[i - 2].NameUtf8;
            ulong ino = i < 2 ? RootId : _nodes[i - 2].NodeId;
            uint type = i < 2 ? DT_DIR : DT_REG;
            int entLen = (DirentHeaderSize + name.Length + 7) & ~7;
            int need = plus ? EntryOutSize + entLen : entLen;
            if (used + need > o.Length) break;
            var e = o.Slice(used, need);
            e.Clear();
            if (plus)
            {
                // "." and ".." get nodeid 0: the kernel skips them instead of creating entries.
                if (i >= 2) FillEntry(e[..EntryOutSize], ino);
                e = e[EntryOutSize..];
            }
            W64(e, 0, ino);
            W64(e, 8, (ulong)(i + 1));
            W32(e, 16, (uint)name.Length);
            W32(e, 20, type);
            name.CopyTo(e[DirentHeaderSize..]);
            used += need;
        }
        return Ok(reply, unique, used);
    }

    private int NodeOk(ulong nodeId, Span<byte> reply, ulong unique, bool wantDir)
    {
        bool ok = wantDir ? nodeId == RootId : Find(nodeId, out _);
        return ok ? Ok(reply, unique, 0) : Error(reply, unique, Errno.EBADF);
    }

    // ---- attribute encoding --------------------------------------------------------------------------------

    private void FillEntry(Span<byte> e, ulong nodeId)
    {
        W64(e, 0, nodeId);
        W64(e, 8, 1); // generation
        SplitTimeout(_options.EntryTimeout, out ulong es, out uint ens);
        SplitTimeout(_options.AttrTimeout, out ulong @as, out uint ans);
        W64(e, 16, es);
        W64(e, 24, @as);
        W32(e, 32, ens);
        W32(e, 36, ans);
        FillAttr(e.Slice(40, AttrSize), nodeId);
    }

    private void FillAttrOut(Span<byte> o, ulong nodeId)
    {
        SplitTimeout(_options.AttrTimeout, out ulong s, out uint ns);
        W64(o, 0, s);
        W32(o, 8, ns);
        W32(o, 12, 0);
        FillAttr(o.Slice(16, AttrSize), nodeId);
    }

    private void FillAttr(Span<byte> a, ulong nodeId)
    {
        a.Clear();
        W64(a, 0, nodeId);
        W32(a, 80, 4096); // blksize
        if (nodeId == RootId)
        {
            PutTimes(a, _startNs, _startNs, _startNs);
            W32(a, 60, S_IFDIR | _dirMode);
            W32(a, 64, 2);
            W32(a, 68, _dirUid);
            W32(a, 72, _dirGid);
            return;
        }
        var n = _nodes[nodeId - 2];
        W64(a, 8, (ulong)n.Device.Length);
        W64(a, 16, (ulong)((n.AllocatedBytes() + 511) / 512));
        PutTimes(a, n.AtimeNs, n.MtimeNs, n.CtimeNs);
        W32(a, 60, S_IFREG | n.Mode);
        W32(a, 64, 1);
        W32(a, 68, n.Uid);
        W32(a, 72, n.Gid);
    }

    private static void PutTimes(Span<byte> a, long atime, long mtime, long ctime)
    {
        W64(a, 24, (ulong)(atime / 1_000_000_000));
        W64(a, 32, (ulong)(mtime / 1_000_000_000));
        W64(a, 40, (ulong)(ctime / 1_000_000_000));
        W32(a, 48, (uint)(atime % 1_000_000_000));
        W32(a, 52, (uint)(mtime % 1_000_000_000));
        W32(a, 56, (uint)(ctime % 1_000_000_000));
    }

    private static void SplitTimeout(TimeSpan t, out ulong sec, out uint nsec)
    {
        long ticks = Math.Max(0, t.Ticks);
        sec = (ulong)(ticks / TimeSpan.TicksPerSecond);
        nsec = (uint)(ticks % TimeSpan.TicksPerSecond * 100);
    }

    // ---- helpers -------------------------------------------------------------------------------------------

    private bool Find(ulong nodeId, out ImageNode node)
    {
        ulong i = nodeId - 2;
        if (nodeId >= 2 && i < (ulong)_nodes.Length) { node = _nodes[i]; return true; }
        node = null!;
        return false;
    }

    private static long NowNs() => (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;

    private static long TimeNs(ulong sec, uint nsec) => (long)Math.Min(sec, long.MaxValue / 1_000_000_000 - 1) * 1_000_000_000 + Math.Min(nsec, 999_999_999u);

    private static int Ok(Span<byte> reply, ulong unique, int payload)
    {
        int len = OutHeaderSize + payload;
        W32(reply, 0, (uint)len);
        W32(reply, 4, 0);
        W64(reply, 8, unique);
        return len;
    }

    internal static int Error(Span<byte> reply, ulong unique, int errno)
    {
        W32(reply, 0, OutHeaderSize);
        BinaryPrimitives.WriteInt32LittleEndian(reply[4..], -errno);
        W64(reply, 8, unique);
        return OutHeaderSize;
    }

    private static uint U32(ReadOnlySpan<byte> s, int off) => BinaryPrimitives.ReadUInt32LittleEndian(s[off..]);
    private static ulong U64(ReadOnlySpan<byte> s, int off) => BinaryPrimitives.ReadUInt64LittleEndian(s[off..]);
    private static void W16(Span<byte> s, int off, int v) => BinaryPrimitives.WriteUInt16LittleEndian(s[off..], (ushort)v);
    private static void W32(Span<byte> s, int off, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(s[off..], v);
    private static void W64(Span<byte> s, int off, ulong v) => BinaryPrimitives.WriteUInt64LittleEndian(s[off..], v);

    private static void Trace(ReadOnlySpan<byte> req, ReadOnlySpan<byte> reply, int n, TimeSpan took)
    {
        if (req.Length < InHeaderSize) return;
        uint op = U32(req, 4);
        string detail = "";
        if ((op == READ || op == WRITE) && req.Length >= InHeaderSize + ReadInSize)
            detail = $" off={U64(req, InHeaderSize + 8)} size={U32(req, InHeaderSize + 16)}";
        string result = n == 0 ? "no reply"
            : BinaryPrimitives.ReadInt32LittleEndian(reply[4..]) is var err and < 0 ? $"error {-err}" : $"ok {n - OutHeaderSize} bytes";
        Console.Error.WriteLine(
            $"fuse: #{U64(req, 8)} {OpcodeName(op)} node={U64(req, 16)}{detail} -> {result} ({took.TotalMicroseconds:F0} us)");
    }
}
