// Passthrough policy: which opens of an image the kernel serves from its data file (FUSE_DEV_IOC_BACKING_OPEN),
// and when an image switches to it (see README.md, "Passthrough").

namespace Fvd.Fuse;

public sealed partial class FuseDispatcher
{
    /// <summary>
    /// The backing id to pass this open through with, or 0 to serve it ourselves. The first eligible open
    /// registers the data file with the kernel; a refusal (EPERM, EINVAL, ENOTTY...) is logged once and turns
    /// passthrough off for the mount.
    /// </summary>
    private int PassthroughFor(ImageNode node)
    {
        int id = Volatile.Read(ref node.BackingId);
        if (id > 0) return id;
        if (node.PassthroughSource is not { } src || !PassthroughAvailable || node.PassthroughFailed
            || BackingOpen is not { } backingOpen || Volatile.Read(ref node.CachedOpens) != 0) return 0;
        lock (node.PassthroughLock)
        {
            if (node.BackingId > 0) return node.BackingId;
            if (node.PassthroughFailed || Volatile.Read(ref node.CachedOpens) != 0 || Volatile.Read(ref _passthroughRefused) != 0) return 0;
            string? path;
            try { path = src.PassthroughPath; }
            catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException) { path = null; }
            if (path is null) return 0;
            int r = backingOpen(path, _options.ReadOnly || node.Device.IsReadOnly);
            if (r > 0)
            {
                node.PassthroughFile = path;
                Volatile.Write(ref node.BackingId, r);
                if (_options.Debug) Console.Error.WriteLine($"fvdmount: {node.Name}: new opens pass through to {path} (backing id {r})");
                return r;
            }
            int err = -r;
            if (err is Errno.EPERM or Errno.EINVAL or Errno.ENOTTY or Errno.EOPNOTSUPP or Errno.ENOSYS)
            {
                if (Interlocked.Exchange(ref _passthroughRefused, 1) == 0)
                    Console.Error.WriteLine($"fvdmount: the kernel refused FUSE passthrough ({Fvd.Core.Io.Libc.StrError(err)}); serving every open normally");
            }
            else
            {
                Console.Error.WriteLine($"fvdmount: {node.Name}: cannot pass through to {path}: {Fvd.Core.Io.Libc.StrError(err)}; serving it normally");
            }
            node.PassthroughFailed = true;
            return 0;
        }
    }

    /// <summary>Whether a new open of this image would be passed through now (for its status file).</summary>
    private bool WouldPassThrough(ImageNode node)
    {
        if (Volatile.Read(ref node.BackingId) > 0) return true;
        if (node.PassthroughSource is not { } src || !PassthroughAvailable || node.PassthroughFailed || BackingOpen is null) return false;
        try { return src.PassthroughPath is not null && Volatile.Read(ref node.CachedOpens) == 0; }
        catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException) { return false; }
    }
}
