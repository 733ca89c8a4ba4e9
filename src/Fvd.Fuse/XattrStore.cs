// Extended attributes of one view file, kept in memory for the life of the mount (man/fvdmount.1, "Extended
// attributes"). libvirt's DAC and SELinux drivers record a file's original owner and label in trusted.* and
// security.* names before they relabel it, and refuse to start a domain when that fails.
using System.Text;

namespace Fvd.Fuse;

internal sealed class XattrStore
{
    /// <summary>Namespaces we keep; system.* (POSIX ACLs) and anything else is not supported.</summary>
    private static readonly string[] Prefixes = ["user.", "trusted.", "security."];
    /// <summary>XATTR_NAME_MAX in include/uapi/linux/limits.h.</summary>
    public const int MaxNameBytes = 255;
    /// <summary>XATTR_SIZE_MAX; the kernel refuses larger values itself, we check again.</summary>
    public const int MaxValueBytes = 65536;
    /// <summary>Bounds per file, so that a client cannot make the daemon hold unbounded memory.</summary>
    public const int MaxCount = 64, MaxTotalBytes = 256 * 1024;

    public const uint XATTR_CREATE = 1, XATTR_REPLACE = 2;

    private readonly object _lock = new();
    private readonly List<KeyValuePair<string, byte[]>> _items = [];
    private int _totalBytes;

    /// <summary>True when a name of this namespace may be stored.</summary>
    public static bool Supported(string name) =>
        Array.Exists(Prefixes, p => name.Length > p.Length && name.StartsWith(p, StringComparison.Ordinal));

    /// <summary>Sets a value; returns 0 or an errno (EEXIST, ENODATA, ENOSPC, ERANGE, EINVAL, EOPNOTSUPP).</summary>
    public int Set(string name, ReadOnlySpan<byte> value, uint flags)
    {
        int nameBytes = Encoding.UTF8.GetByteCount(name);
        if (nameBytes == 0 || nameBytes > MaxNameBytes) return Errno.ERANGE;
        if (value.Length > MaxValueBytes) return Errno.E2BIG;
        if ((flags & ~(XATTR_CREATE | XATTR_REPLACE)) != 0) return Errno.EINVAL;
        if (!Supported(name)) return Errno.EOPNOTSUPP;
        lock (_lock)
        {
            int i = IndexOf(name);
            if (i >= 0 && (flags & XATTR_CREATE) != 0) return Errno.EEXIST;
            if (i < 0 && (flags & XATTR_REPLACE) != 0) return Errno.ENODATA;
            int old = i >= 0 ? nameBytes + _items[i].Value.Length : 0;
            int total = _totalBytes - old + nameBytes + value.Length;
            if (total > MaxTotalBytes || (i < 0 && _items.Count >= MaxCount)) return Errno.ENOSPC;
            var entry = new KeyValuePair<string, byte[]>(name, value.ToArray());
            if (i >= 0) _items[i] = entry;
            else _items.Add(entry);
            _totalBytes = total;
            return 0;
        }
    }

    /// <summary>The value of a name, or null when it is not set.</summary>
    public byte[]? Get(string name)
    {
        lock (_lock)
        {
            int i = IndexOf(name);
            return i >= 0 ? _items[i].Value : null;
        }
    }

    /// <summary>Removes a name; returns 0 or ENODATA.</summary>
    public int Remove(string name)
    {
        lock (_lock)
        {
            int i = IndexOf(name);
            if (i < 0) return Errno.ENODATA;
            _totalBytes -= Encoding.UTF8.GetByteCount(name) + _items[i].Value.Length;
            _items.RemoveAt(i);
            return 0;
        }
    }

    /// <summary>The names, each followed by a NUL, in the order they were first set (listxattr(2)).</summary>
    public byte[] List()
    {
        lock (_lock)
        {
            var ms = new MemoryStream();
            foreach (var kv in _items)
            {
                ms.Write(Encoding.UTF8.GetBytes(kv.Key));
                ms.WriteByte(0);
            }
            return ms.ToArray();
        }
    }

    private int IndexOf(string name) => _items.FindIndex(kv => string.Equals(kv.Key, name, StringComparison.Ordinal));
}
