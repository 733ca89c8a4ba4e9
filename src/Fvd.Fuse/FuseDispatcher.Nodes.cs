// The node table: the root (1), the images (2..), the status directory and its files after them; and the
// directory listings built from it.
using static Fvd.Fuse.FuseProtocol;

namespace Fvd.Fuse;

public sealed partial class FuseDispatcher
{
    private bool IsDir(ulong nodeId) => nodeId == RootId || (nodeId == _statusDirId && _statusDirId != 0);

    private int OpenDir(ulong nodeId, Span<byte> reply, ulong unique)
    {
        if (!IsDir(nodeId)) return Error(reply, unique, Exists(nodeId) ? Errno.ENOTDIR : Errno.ENOENT);
        var o = reply.Slice(OutHeaderSize, OpenOutSize);
        o.Clear();
        return Ok(reply, unique, OpenOutSize);
    }

    /// <summary>Entry i of a directory: ".", "..", then the images and ".fvd" (root) or the status files.</summary>
    private bool DirEntry(ulong dir, long i, out byte[] name, out ulong ino, out uint type)
    {
        name = Dot; ino = dir; type = DT_DIR;
        if (i == 0) return true;
        if (i == 1) { name = DotDot; ino = RootId; return true; }
        long k = i - 2;
        if (dir == RootId)
        {
            if (k < _nodes.Length) { name = _nodes[k].NameUtf8; ino = _nodes[k].NodeId; type = DT_REG; return true; }
            k -= _nodes.Length;
            var parts = _partitionList;
            if (k < parts.Length) { name = parts[k].NameUtf8; ino = parts[k].NodeId; type = DT_REG; return true; }
            if (k == parts.Length && _statusDirId != 0) { name = StatusDirName; ino = _statusDirId; return true; }
            return false;
        }
        if (k < _status.Length) { name = _status[k].NameUtf8; ino = _status[k].NodeId; type = DT_REG; return true; }
        return false;
    }

    private int ReadDir(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique, bool plus)
    {
        if (body.Length < ReadInSize) return Error(reply, unique, Errno.EINVAL);
        if (!IsDir(nodeId)) return Error(reply, unique, Exists(nodeId) ? Errno.ENOTDIR : Errno.ENOENT);
        if (nodeId == RootId) RefreshPartitions();
        long start = (long)U64(body, ReadIn.Offset);
        uint size = U32(body, ReadIn.Size);
        if (size > reply.Length - OutHeaderSize) return Error(reply, unique, Errno.EINVAL);
        var o = reply.Slice(OutHeaderSize, (int)size);
        int used = 0;
        // Each entry's "off" is the cookie of the next.
        for (long i = Math.Max(0, start); DirEntry(nodeId, i, out var name, out ulong ino, out uint type); i++)
        {
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
            W64(e, Dirent.Ino, ino);
            W64(e, Dirent.Off, (ulong)(i + 1));
            W32(e, Dirent.NameLen, (uint)name.Length);
            W32(e, Dirent.Type, type);
            name.CopyTo(e[DirentHeaderSize..]);
            used += need;
        }
        return Ok(reply, unique, used);
    }

    private int NodeOk(ulong nodeId, Span<byte> reply, ulong unique, bool wantDir)
    {
        bool ok = wantDir ? IsDir(nodeId) : Exists(nodeId) && !IsDir(nodeId);
        return ok ? Ok(reply, unique, 0) : Error(reply, unique, Errno.EBADF);
    }

    private bool Find(ulong nodeId, out ImageNode node)
    {
        ulong i = nodeId - 2;
        if (nodeId >= 2 && i < (ulong)_nodes.Length) { node = _nodes[i]; return true; }
        return FindPartition(nodeId, out node);
    }

    private bool FindStatus(ulong nodeId, out StatusNode node)
    {
        ulong i = nodeId - _statusDirId - 1;
        if (_statusDirId != 0 && nodeId > _statusDirId && i < (ulong)_status.Length) { node = _status[i]; return true; }
        node = null!;
        return false;
    }

    /// <summary>Any node of the mount: the root, an image, the status directory or a status file.</summary>
    private bool Exists(ulong nodeId) =>
        nodeId == RootId || Find(nodeId, out _) || (nodeId == _statusDirId && _statusDirId != 0) || FindStatus(nodeId, out _);
}
