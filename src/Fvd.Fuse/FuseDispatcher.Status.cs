// The status directory ".fvd": one read-only JSON snapshot per image, taken at OPEN and served from memory.
using System.Buffers;
using System.Diagnostics;
using System.Text.Json;
using static Fvd.Fuse.FuseProtocol;

namespace Fvd.Fuse;

public sealed partial class FuseDispatcher
{
    private sealed class StatusNode(ulong nodeId, byte[] nameUtf8, ImageNode image)
    {
        public ulong NodeId { get; } = nodeId;
        public byte[] NameUtf8 { get; } = nameUtf8;
        public ImageNode Image { get; } = image;
        public readonly object Lock = new();
        public byte[]? Latest;
        public long LatestAt;
    }

    /// <summary>Per-request overhead counters; the transport records into them, the status files show them.</summary>
    public RequestStats Stats { get; } = new();

    /// <summary>How the transport talks to the kernel ("dev": read/write on /dev/fuse), for the status files.</summary>
    public string Transport { get; set; } = "dev";

    /// <summary>Number of /dev/fuse descriptors the request threads read (more than 1: cloned per thread).</summary>
    public int DeviceFds { get; set; } = 1;

    /// <summary>
    /// Opens a status file: the content is fixed for this handle (a snapshot) and served with direct I/O, so
    /// every read returns it regardless of cached sizes. The snapshot is the one whose size the last
    /// LOOKUP/GETATTR reported, if that was under a second ago, so `stat` and `cat` agree.
    /// </summary>
    private int OpenStatus(StatusNode st, uint flags, Span<byte> reply, ulong unique)
    {
        if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0)
            return Error(reply, unique, _options.ReadOnly ? Errno.EROFS : Errno.EACCES);
        byte[] snap;
        lock (st.Lock)
        {
            snap = st.Latest is { } l && Stopwatch.GetTimestamp() - st.LatestAt < SnapshotReuseTicks ? l : Snapshot(st);
            st.Latest = null; // the next open takes a new one
        }
        ulong fh = StatusHandleBit | (ulong)Interlocked.Increment(ref _nextStatusHandle);
        _snapshots[fh] = snap;
        var o = reply.Slice(OutHeaderSize, OpenOutSize);
        o.Clear();
        W64(o, OpenOut.Fh, fh);
        W32(o, OpenOut.OpenFlags, FOPEN_DIRECT_IO);
        return Ok(reply, unique, OpenOutSize);
    }

    /// <summary>The size to report for a status file: that of a fresh snapshot, kept for the next open.</summary>
    private long StatusSize(StatusNode st)
    {
        lock (st.Lock)
        {
            st.Latest = Snapshot(st);
            st.LatestAt = Stopwatch.GetTimestamp();
            return st.Latest.Length;
        }
    }

    private byte[] Snapshot(StatusNode st)
    {
        var node = st.Image;
        var buf = new ArrayBufferWriter<byte>(1024);
        using (var w = new Utf8JsonWriter(buf, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("name", node.Name);
            w.WriteNumber("size", node.Device.Length);
            w.WriteBoolean("read_only", _options.ReadOnly || node.Device.IsReadOnly);
            w.WriteBoolean("passthrough", WouldPassThrough(node));
            w.WriteBoolean("passthrough_active", Volatile.Read(ref node.BackingId) > 0);
            WritePartitionStatus(w, node);
            w.WriteString("transport", Transport);
            w.WriteNumber("fuse_fds", DeviceFds);
            Stats.WriteJson(w);
            if (node.StatusSource is { } src)
            {
                try { src.WriteStatus(w); }
                catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException or Fvd.Core.FvdException)
                {
                    w.WriteString("error", e.Message);
                }
            }
            else
            {
                w.WriteString("format", "raw");
            }
            w.WriteEndObject();
        }
        buf.Write("\n"u8);
        return buf.WrittenSpan.ToArray();
    }

    private int ReadStatus(ReadOnlySpan<byte> body, Span<byte> reply, ulong unique)
    {
        ulong fh = U64(body, ReadIn.Fh);
        long offset = (long)U64(body, ReadIn.Offset);
        uint size = U32(body, ReadIn.Size);
        if (!_snapshots.TryGetValue(fh, out var snap)) return Error(reply, unique, Errno.EBADF);
        if (offset < 0 || size > reply.Length - OutHeaderSize) return Error(reply, unique, Errno.EINVAL);
        int n = offset >= snap.Length ? 0 : (int)Math.Min(size, snap.Length - offset);
        snap.AsSpan((int)offset, n).CopyTo(reply[OutHeaderSize..]);
        return Ok(reply, unique, n);
    }
}
