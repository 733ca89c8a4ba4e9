// Encoding: attributes and entries as the kernel expects them, reply headers, little-endian field access
// and the request trace (-o debug).
using System.Buffers.Binary;
using static Fvd.Fuse.FuseProtocol;

namespace Fvd.Fuse;

public sealed partial class FuseDispatcher
{
    private void FillEntry(Span<byte> e, ulong nodeId)
    {
        W64(e, EntryOut.NodeId, nodeId);
        W64(e, EntryOut.Generation, 1); // generation
        // Status files change size with every snapshot, partitions with the table: the kernel must ask each time.
        bool live = FindStatus(nodeId, out _) || IsPartitionId(nodeId);
        SplitTimeout(live ? TimeSpan.Zero : _options.EntryTimeout, out ulong es, out uint ens);
        SplitTimeout(live ? TimeSpan.Zero : _options.AttrTimeout, out ulong @as, out uint ans);
        W64(e, EntryOut.EntryValid, es);
        W64(e, EntryOut.AttrValid, @as);
        W32(e, EntryOut.EntryValidNsec, ens);
        W32(e, EntryOut.AttrValidNsec, ans);
        FillAttr(e.Slice(EntryOut.Attr, AttrSize), nodeId);
    }

    private void FillAttrOut(Span<byte> o, ulong nodeId)
    {
        SplitTimeout(FindStatus(nodeId, out _) || IsPartitionId(nodeId) ? TimeSpan.Zero : _options.AttrTimeout, out ulong s, out uint ns);
        W64(o, AttrOut.AttrValid, s);
        W32(o, AttrOut.AttrValidNsec, ns);
        W32(o, AttrOut.Dummy, 0);
        FillAttr(o.Slice(AttrOut.Attr, AttrSize), nodeId);
    }

    private void FillAttr(Span<byte> a, ulong nodeId)
    {
        a.Clear();
        W64(a, Attr.Ino, nodeId);
        W32(a, Attr.BlkSize, 4096); // blksize
        if (nodeId == RootId)
        {
            PutTimes(a, _startNs, _startNs, _startNs);
            W32(a, Attr.Mode, S_IFDIR | _dirMode);
            W32(a, Attr.NLink, 2);
            W32(a, Attr.Uid, _dirUid);
            W32(a, Attr.Gid, _dirGid);
            return;
        }
        if (!Find(nodeId, out var n))
        {
            // The status directory (0555) and its files (0444), owned like the root directory.
            PutTimes(a, _startNs, _startNs, _startNs);
            W32(a, Attr.Uid, _dirUid);
            W32(a, Attr.Gid, _dirGid);
            if (nodeId == _statusDirId) { W32(a, Attr.Mode, S_IFDIR | 0x16D); W32(a, Attr.NLink, 2); return; }
            if (!FindStatus(nodeId, out var st)) return;
            long now = NowNs();
            PutTimes(a, now, now, now);
            W64(a, Attr.Size, (ulong)StatusSize(st));
            W32(a, Attr.Mode, S_IFREG | 0x124);
            W32(a, Attr.NLink, 1);
            return;
        }
        W64(a, Attr.Size, (ulong)n.Device.Length);
        W64(a, Attr.Blocks, (ulong)((n.AllocatedBytes() + 511) / 512));
        long mtime = n.MtimeNs;
        if (Volatile.Read(ref n.BackingId) > 0 && n.PassthroughFile is { } pf)
        {
            // Passthrough writes never reach us: the data file's mtime tells when the image last changed.
            try { mtime = Math.Max(mtime, (File.GetLastWriteTimeUtc(pf).Ticks - DateTime.UnixEpoch.Ticks) * 100); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        PutTimes(a, n.AtimeNs, mtime, n.CtimeNs);
        W32(a, Attr.Mode, S_IFREG | n.Mode);
        W32(a, Attr.NLink, 1);
        W32(a, Attr.Uid, n.Uid);
        W32(a, Attr.Gid, n.Gid);
    }

    private static void PutTimes(Span<byte> a, long atime, long mtime, long ctime)
    {
        W64(a, Attr.Atime, (ulong)(atime / 1_000_000_000));
        W64(a, Attr.Mtime, (ulong)(mtime / 1_000_000_000));
        W64(a, Attr.Ctime, (ulong)(ctime / 1_000_000_000));
        W32(a, Attr.AtimeNsec, (uint)(atime % 1_000_000_000));
        W32(a, Attr.MtimeNsec, (uint)(mtime % 1_000_000_000));
        W32(a, Attr.CtimeNsec, (uint)(ctime % 1_000_000_000));
    }

    private static void SplitTimeout(TimeSpan t, out ulong sec, out uint nsec)
    {
        long ticks = Math.Max(0, t.Ticks);
        sec = (ulong)(ticks / TimeSpan.TicksPerSecond);
        nsec = (uint)(ticks % TimeSpan.TicksPerSecond * 100);
    }


    private static long NowNs() => (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;

    private static long TimeNs(ulong sec, uint nsec) => (long)Math.Min(sec, long.MaxValue / 1_000_000_000 - 1) * 1_000_000_000 + Math.Min(nsec, 999_999_999u);

    private static int Ok(Span<byte> reply, ulong unique, int payload)
    {
        int len = OutHeaderSize + payload;
        W32(reply, OutHeader.Len, (uint)len);
        W32(reply, OutHeader.Error, 0);
        W64(reply, OutHeader.Unique, unique);
        return len;
    }

    internal static int Error(Span<byte> reply, ulong unique, int errno)
    {
        W32(reply, OutHeader.Len, OutHeaderSize);
        BinaryPrimitives.WriteInt32LittleEndian(reply[OutHeader.Error..], -errno);
        W64(reply, OutHeader.Unique, unique);
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
        uint op = U32(req, InHeader.Opcode);
        string detail = "";
        if ((op == READ || op == WRITE) && req.Length >= InHeaderSize + ReadInSize)
            detail = $" off={U64(req, InHeaderSize + ReadIn.Offset)} size={U32(req, InHeaderSize + ReadIn.Size)}";
        string result = n == 0 ? "no reply"
            : BinaryPrimitives.ReadInt32LittleEndian(reply[OutHeader.Error..]) is var err and < 0 ? $"error {-err}" : $"ok {n - OutHeaderSize} bytes";
        Console.Error.WriteLine(
            $"fuse: #{U64(req, InHeader.Unique)} {OpcodeName(op)} node={U64(req, InHeader.NodeId)}{detail} -> {result} ({took.TotalMicroseconds:F0} us)");
    }
}
