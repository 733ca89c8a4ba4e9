// SETXATTR/GETXATTR/LISTXATTR/REMOVEXATTR: the view files keep user.*, trusted.* and security.* names in memory
// (XattrStore); the directories and status files have none and take none.
using System.Text;
using static Fvd.Fuse.FuseProtocol;

namespace Fvd.Fuse;

public sealed partial class FuseDispatcher
{
    /// <summary>getxattr(2) and listxattr(2): size 0 asks for the size, a smaller buffer gets ERANGE.</summary>
    private int GetXattr(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique, bool list)
    {
        if (body.Length < GetxattrInSize) return Error(reply, unique, Errno.EINVAL);
        if (!Exists(nodeId)) return Error(reply, unique, Errno.ENOENT);
        uint size = U32(body, GetxattrIn.Size);
        byte[]? value;
        if (list) value = XattrsOf(nodeId)?.List() ?? [];
        else
        {
            if (!XattrName(body[GetxattrInSize..], out string name)) return Error(reply, unique, Errno.EINVAL);
            value = XattrsOf(nodeId)?.Get(name);
            if (value is null) return Error(reply, unique, Errno.ENODATA);
        }
        if (size == 0)
        {
            var o = reply.Slice(OutHeaderSize, GetxattrOutSize);
            o.Clear();
            W32(o, GetxattrOut.Size, (uint)value.Length);
            return Ok(reply, unique, GetxattrOutSize);
        }
        if (value.Length > size) return Error(reply, unique, Errno.ERANGE);
        if (value.Length > reply.Length - OutHeaderSize) return Error(reply, unique, Errno.E2BIG);
        value.CopyTo(reply[OutHeaderSize..]);
        return Ok(reply, unique, value.Length);
    }

    private int SetXattr(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (body.Length < SetxattrInCompatSize) return Error(reply, unique, Errno.EINVAL);
        if (!Exists(nodeId)) return Error(reply, unique, Errno.ENOENT);
        uint size = U32(body, SetxattrIn.Size), flags = U32(body, SetxattrIn.Flags);
        var rest = body[SetxattrInCompatSize..];
        int nul = rest.IndexOf((byte)0);
        if (nul <= 0 || size != (uint)(rest.Length - nul - 1)) return Error(reply, unique, Errno.EINVAL);
        if (!XattrName(rest, out string name)) return Error(reply, unique, Errno.EINVAL);
        if (_options.ReadOnly) return Error(reply, unique, Errno.EROFS);
        var store = XattrsOf(nodeId);
        if (store is null) return Error(reply, unique, Errno.EOPNOTSUPP); // directories and status files
        int err = store.Set(name, rest[(nul + 1)..], flags);
        if (err != 0) return Error(reply, unique, err);
        if (Find(nodeId, out var node)) lock (node.AttrLock) node.SetCtime(NowNs());
        return Ok(reply, unique, 0);
    }

    private int RemoveXattr(ulong nodeId, ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        if (!Exists(nodeId)) return Error(reply, unique, Errno.ENOENT);
        if (!XattrName(body, out string name)) return Error(reply, unique, Errno.EINVAL);
        if (_options.ReadOnly) return Error(reply, unique, Errno.EROFS);
        var store = XattrsOf(nodeId);
        int err = store is null ? Errno.ENODATA : store.Remove(name);
        if (err != 0) return Error(reply, unique, err);
        if (Find(nodeId, out var node)) lock (node.AttrLock) node.SetCtime(NowNs());
        return Ok(reply, unique, 0);
    }

    private XattrStore? XattrsOf(ulong nodeId) => Find(nodeId, out var node) ? node.Xattrs : null;

    /// <summary>The NUL-terminated name at the start of <paramref name="s"/>, if it is one and valid UTF-8.</summary>
    private static bool XattrName(ReadOnlySpan<byte> s, out string name)
    {
        name = "";
        int nul = s.IndexOf((byte)0);
        if (nul <= 0 || nul > XattrStore.MaxNameBytes) return false;
        try { name = Utf8Strict.GetString(s[..nul]); }
        catch (DecoderFallbackException) { return false; }
        return true;
    }

    private static readonly UTF8Encoding Utf8Strict = new(false, throwOnInvalidBytes: true);
}
