// The dispatcher driven with request bytes, no kernel: every opcode's reply is checked byte by byte.
using System.Buffers.Binary;
using System.Text;
using Fvd.Core;
using static Fvd.Fuse.FuseProtocol;

namespace Fvd.Fuse.Tests;

public sealed class DispatcherTests
{
    private const int Size = 1 << 20;
    private readonly TestDevice _dev = new(Size);
    private readonly byte[] _reply = new byte[BufferSize];
    private ulong _unique = 100;

    private FuseDispatcher NewDispatcher(FuseOptions? options = null, TestDevice? dev = null, bool init = true)
    {
        var d = new FuseDispatcher([new FuseImage("disk.raw", dev ?? _dev)], options ?? new FuseOptions());
        if (init)
        {
            var r = Call(d, INIT, 0, InitBody(7, 45, ulong.MaxValue >> 1));
            Assert.Equal(0, r.Error);
        }
        return d;
    }

    // ---- request/reply helpers -----------------------------------------------------------------------------

    private readonly record struct Reply(int Length, int Error, ulong Unique, byte[] Payload);

    internal static byte[] Request(uint op, ulong node, ReadOnlySpan<byte> body, ulong unique, uint uid = 0)
    {
        var r = new byte[InHeaderSize + body.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(r, (uint)r.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(r.AsSpan(4), op);
        BinaryPrimitives.WriteUInt64LittleEndian(r.AsSpan(8), unique);
        BinaryPrimitives.WriteUInt64LittleEndian(r.AsSpan(16), node);
        BinaryPrimitives.WriteUInt32LittleEndian(r.AsSpan(24), uid);
        body.CopyTo(r.AsSpan(InHeaderSize));
        return r;
    }

    private Reply Call(FuseDispatcher d, uint op, ulong node, ReadOnlySpan<byte> body, uint uid = 0)
    {
        ulong u = ++_unique;
        return Parse(d.Handle(Request(op, node, body, u, uid), _reply), u);
    }

    private Reply Parse(int n, ulong expectUnique)
    {
        if (n == 0) return new Reply(0, 0, 0, []);
        Assert.True(n >= OutHeaderSize);
        Assert.Equal((uint)n, BinaryPrimitives.ReadUInt32LittleEndian(_reply));
        ulong unique = BinaryPrimitives.ReadUInt64LittleEndian(_reply.AsSpan(8));
        Assert.Equal(expectUnique, unique);
        int err = -BinaryPrimitives.ReadInt32LittleEndian(_reply.AsSpan(4));
        if (err != 0) Assert.Equal(OutHeaderSize, n); // errors carry no payload
        return new Reply(n, err, unique, _reply.AsSpan(OutHeaderSize, n - OutHeaderSize).ToArray());
    }

    internal static byte[] Body(params object[] fields)
    {
        var ms = new MemoryStream();
        foreach (var f in fields)
        {
            switch (f)
            {
                case uint u: ms.Write(BitConverter.GetBytes(u)); break;
                case ulong l: ms.Write(BitConverter.GetBytes(l)); break;
                case long l: ms.Write(BitConverter.GetBytes(l)); break;
                case byte[] b: ms.Write(b); break;
                default: throw new ArgumentException(f.GetType().Name);
            }
        }
        return ms.ToArray();
    }

    private static byte[] InitBody(uint major, uint minor, ulong flags) =>
        Body(major, minor, 131072u, (uint)flags, (uint)(flags >> 32), new byte[44]);

    private static byte[] ReadBody(long off, uint size) => Body(1UL, off, size, 0u, 0UL, 0u, 0u);

    private static byte[] WriteBody(long off, ReadOnlySpan<byte> data, uint sizeField = uint.MaxValue, uint flags = 0, uint openFlags = 0) =>
        Body(1UL, off, sizeField == uint.MaxValue ? (uint)data.Length : sizeField, flags, 0UL, openFlags, 0u, data.ToArray());

    private static uint U32(byte[] b, int off) => BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(off));
    private static ulong U64(byte[] b, int off) => BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(off));

    // ---- INIT ----------------------------------------------------------------------------------------------

    [Fact]
    public void Init_negotiates_version_sizes_and_flags()
    {
        var d = NewDispatcher(init: false);
        ulong offered = ASYNC_READ | BIG_WRITES | ASYNC_DIO | MAX_PAGES | INIT_EXT | DIRECT_IO_ALLOW_MMAP | (1UL << 16);
        var r = Call(d, INIT, 0, InitBody(7, 45, offered));
        Assert.Equal(0, r.Error);
        Assert.Equal(InitOutSize, r.Payload.Length);
        Assert.Equal(7u, U32(r.Payload, 0));
        Assert.Equal(OurMinor, U32(r.Payload, 4));
        ulong flags = U32(r.Payload, 12) | ((ulong)U32(r.Payload, 32) << 32);
        Assert.Equal(ASYNC_READ | BIG_WRITES | ASYNC_DIO | MAX_PAGES | INIT_EXT | DIRECT_IO_ALLOW_MMAP, flags);
        Assert.Equal(0UL, flags & (1UL << 16)); // writeback cache offered but not taken
        Assert.Equal((uint)MaxWrite, U32(r.Payload, 20));
        Assert.Equal(256, BinaryPrimitives.ReadUInt16LittleEndian(r.Payload.AsSpan(28)));
        Assert.True(d.Initialized);
        Assert.True(d.InitDone.WaitOne(0));
    }

    [Fact]
    public void Init_takes_the_kernels_lower_minor_and_refuses_ancient_kernels()
    {
        var d = NewDispatcher(init: false);
        Assert.Equal(Errno.EPROTO, Call(d, INIT, 0, InitBody(7, 20, ASYNC_READ)).Error);
        Assert.False(d.Initialized);
        var r = Call(d, INIT, 0, InitBody(7, 34, ASYNC_READ));
        Assert.Equal(0, r.Error);
        Assert.Equal(34u, U32(r.Payload, 4));
    }

    [Fact]
    public void Requests_before_init_fail_with_EIO()
    {
        var d = NewDispatcher(init: false);
        Assert.Equal(Errno.EIO, Call(d, GETATTR, RootId, new byte[16]).Error);
    }

    // ---- LOOKUP / GETATTR / READDIR ------------------------------------------------------------------------

    [Fact]
    public void Lookup_finds_the_image_and_reports_its_attributes()
    {
        var d = NewDispatcher(new FuseOptions { Uid = 1234, Gid = 99 });
        var r = Call(d, LOOKUP, RootId, "disk.raw\0"u8);
        Assert.Equal(0, r.Error);
        Assert.Equal(EntryOutSize, r.Payload.Length);
        Assert.Equal(2UL, U64(r.Payload, 0));
        var attr = r.Payload.AsSpan(40).ToArray();
        Assert.Equal((ulong)Size, U64(attr, 8));
        Assert.Equal(S_IFREG | 0x1A4u, U32(attr, 60)); // 0644 with the default umask 022
        Assert.Equal(1234u, U32(attr, 68));
        Assert.Equal(99u, U32(attr, 72));

        Assert.Equal(Errno.ENOENT, Call(d, LOOKUP, RootId, "other.raw\0"u8).Error);
        Assert.Equal(Errno.ENOENT, Call(d, LOOKUP, RootId, "disk.ra\0"u8).Error);
        Assert.Equal(Errno.ENOTDIR, Call(d, LOOKUP, 2, "x\0"u8).Error);
    }

    [Fact]
    public void Getattr_reports_directory_and_truthful_block_count()
    {
        var d = NewDispatcher();
        var root = Call(d, GETATTR, RootId, new byte[16]);
        Assert.Equal(0, root.Error);
        Assert.Equal(S_IFDIR | 0x1EDu, U32(root.Payload, 16 + 60)); // 0755

        var empty = Call(d, GETATTR, 2, new byte[16]);
        Assert.Equal(0UL, U64(empty.Payload, 16 + 16)); // nothing written: no blocks

        var fresh = new TestDevice(Size);
        fresh.Write(8192, new byte[10000]); // blocks 2..4 => 3 x 4 KiB
        var d2 = NewDispatcher(dev: fresh);
        var r = Call(d2, GETATTR, 2, new byte[16]);
        Assert.Equal(3UL * 4096 / 512, U64(r.Payload, 16 + 16));

        Assert.Equal(Errno.ENOENT, Call(d, GETATTR, 77, new byte[16]).Error);
    }

    [Fact]
    public void Readdir_lists_dot_dotdot_and_the_images_and_resumes_at_an_offset()
    {
        var d = new FuseDispatcher([new FuseImage("a.raw", new TestDevice(4096)), new FuseImage("b.raw", new TestDevice(4096))], new FuseOptions());
        Assert.Equal(0, Call(d, INIT, 0, InitBody(7, 38, ASYNC_READ)).Error);
        Assert.Equal(0, Call(d, OPENDIR, RootId, new byte[8]).Error);
        var all = Names(Call(d, READDIR, RootId, ReadBody(0, 4096)).Payload, plus: false);
        Assert.Equal([".", "..", "a.raw", "b.raw"], all);
        var rest = Names(Call(d, READDIR, RootId, ReadBody(3, 4096)).Payload, plus: false);
        Assert.Equal(["b.raw"], rest);
        var plus = Names(Call(d, READDIRPLUS, RootId, ReadBody(0, 4096)).Payload, plus: true);
        Assert.Equal([".", "..", "a.raw", "b.raw"], plus);
        // A buffer too small for everything returns what fits; the kernel asks again from the last offset.
        var first = Names(Call(d, READDIR, RootId, ReadBody(0, 40)).Payload, plus: false);
        Assert.Equal(["."], first);
    }

    private static List<string> Names(byte[] buf, bool plus)
    {
        var names = new List<string>();
        int pos = 0;
        while (pos < buf.Length)
        {
            if (plus) pos += EntryOutSize;
            int len = (int)U32(buf, pos + 16);
            names.Add(Encoding.UTF8.GetString(buf, pos + 24, len));
            pos += (24 + len + 7) & ~7;
        }
        return names;
    }

    // ---- READ / WRITE --------------------------------------------------------------------------------------

    [Fact]
    public void Read_returns_device_bytes_short_at_the_end_and_empty_past_it()
    {
        new Random(1).NextBytes(_dev.Bytes);
        var d = NewDispatcher();
        var r = Call(d, READ, 2, ReadBody(12345, 777));
        Assert.Equal(0, r.Error);
        Assert.Equal(_dev.Bytes.AsSpan(12345, 777).ToArray(), r.Payload);

        var tail = Call(d, READ, 2, ReadBody(Size - 100, 4096));
        Assert.Equal(_dev.Bytes.AsSpan(Size - 100).ToArray(), tail.Payload);
        Assert.Empty(Call(d, READ, 2, ReadBody(Size, 4096)).Payload);
        Assert.Empty(Call(d, READ, 2, ReadBody(Size + 5000, 4096)).Payload);

        var full = Call(d, READ, 2, ReadBody(0, MaxWrite));
        Assert.Equal(_dev.Bytes, full.Payload);
    }

    [Fact]
    public void Write_at_odd_offsets_lands_in_the_device_and_past_the_end_is_ENOSPC()
    {
        var d = NewDispatcher();
        var data = Enumerable.Range(0, 3333).Select(i => (byte)(i * 7 + 1)).ToArray();
        var r = Call(d, WRITE, 2, WriteBody(1001, data));
        Assert.Equal(0, r.Error);
        Assert.Equal(3333u, U32(r.Payload, 0));
        Assert.Equal(data, _dev.Bytes.AsSpan(1001, 3333).ToArray());

        var straddle = Call(d, WRITE, 2, WriteBody(Size - 10, data));
        Assert.Equal(0, straddle.Error);
        Assert.Equal(10u, U32(straddle.Payload, 0)); // short, like a block device
        Assert.Equal(data.AsSpan(0, 10).ToArray(), _dev.Bytes.AsSpan(Size - 10).ToArray());

        Assert.Equal(Errno.ENOSPC, Call(d, WRITE, 2, WriteBody(Size, data)).Error);
        Assert.Equal(Errno.ENOSPC, Call(d, WRITE, 2, WriteBody(Size + 4096, data)).Error);
    }

    [Fact]
    public void Write_on_a_read_only_mount_is_EROFS_and_so_is_opening_for_write()
    {
        var d = NewDispatcher(new FuseOptions { ReadOnly = true });
        Assert.Equal(Errno.EROFS, Call(d, WRITE, 2, WriteBody(0, new byte[10])).Error);
        Assert.Equal(Errno.EROFS, Call(d, OPEN, 2, Body(2u /*O_RDWR*/, 0u)).Error);
        Assert.Equal(Errno.EROFS, Call(d, OPEN, 2, Body(1u /*O_WRONLY*/, 0u)).Error);
        Assert.Equal(0, Call(d, OPEN, 2, Body(0u, 0u)).Error);
        Assert.Equal(Errno.EROFS, Call(d, FALLOCATE, 2, Body(1UL, 0L, 4096L, 3u, 0u)).Error);
    }

    [Fact]
    public void Open_uses_direct_io_for_O_DIRECT_openers_or_when_configured()
    {
        var d = NewDispatcher();
        var plain = Call(d, OPEN, 2, Body(2u, 0u));
        Assert.Equal(FOPEN_KEEP_CACHE, U32(plain.Payload, 8));
        var direct = Call(d, OPEN, 2, Body(2u | O_DIRECT, 0u));
        Assert.Equal(FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES, U32(direct.Payload, 8));
        var forced = Call(NewDispatcher(new FuseOptions { DirectIo = true }), OPEN, 2, Body(0u, 0u));
        Assert.Equal(FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES, U32(forced.Payload, 8));
        Assert.Equal(Errno.EISDIR, Call(d, OPEN, RootId, Body(0u, 0u)).Error);
    }

    [Fact]
    public void Fsync_flushes_the_device_before_replying()
    {
        var d = NewDispatcher();
        Assert.Equal(0, Call(d, FSYNC, 2, Body(1UL, 1u, 0u)).Error);
        Assert.Equal(0, Call(d, FSYNC, 2, Body(1UL, 0u, 0u)).Error);
        Assert.Equal(2, _dev.Flushes);
        Assert.Equal(0, Call(d, FLUSH, 2, Body(1UL, 0u, 0u, 0UL)).Error);
        Assert.Equal(2, _dev.Flushes); // FLUSH (close) is cheap
        _dev.FailWith = new FvdException(FvdErrorKind.Io, "disk on fire");
        Assert.Equal(Errno.EIO, Call(d, FSYNC, 2, Body(1UL, 0u, 0u)).Error);
    }

    [Theory]
    [InlineData(O_DSYNC)]
    [InlineData(O_SYNC)]
    [InlineData(O_DSYNC | O_DIRECT | 2u)]
    public void Write_flagged_dsync_or_sync_is_flushed_before_its_reply(uint openFlags)
    {
        // With direct I/O the kernel sends no FSYNC after an O_DSYNC/O_SYNC/RWF_DSYNC write: the flag in
        // fuse_write_in.flags is all there is.
        var d = NewDispatcher();
        var r = Call(d, WRITE, 2, WriteBody(4096, new byte[] { 1, 2, 3 }, openFlags: openFlags));
        Assert.Equal(0, r.Error);
        Assert.Equal(1, _dev.Writes);
        Assert.Equal(1, _dev.Flushes);          // Handle returned the reply only after the flush
        Assert.Equal(1, _dev.WritesAtLastFlush); // and the flush came after the write

        _dev.FailWith = new FvdException(FvdErrorKind.Io, "disk on fire");
        Assert.Equal(Errno.EIO, Call(d, WRITE, 2, WriteBody(4096, new byte[] { 1 }, openFlags: openFlags)).Error);
    }

    [Fact]
    public void Write_without_sync_flags_does_not_flush()
    {
        var d = NewDispatcher();
        for (int i = 0; i < 5; i++)
            Assert.Equal(0, Call(d, WRITE, 2, WriteBody(i * 4096, new byte[100], openFlags: 2u | O_DIRECT)).Error);
        Assert.Equal(5, _dev.Writes);
        Assert.Equal(0, _dev.Flushes);
    }

    // ---- FALLOCATE / LSEEK / SETATTR -----------------------------------------------------------------------

    [Fact]
    public void Fallocate_punch_zero_and_preallocate()
    {
        new Random(2).NextBytes(_dev.Bytes);
        _dev.Write(0, _dev.Bytes.AsSpan(0, Size).ToArray());
        var d = NewDispatcher();
        Assert.Equal(0, Call(d, FALLOCATE, 2, Body(1UL, 4096L, 8192L, FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE, 0u)).Error);
        Assert.Equal(1, _dev.Discards);
        Assert.True(_dev.Bytes.AsSpan(4096, 8192).IndexOfAnyExcept((byte)0) < 0);

        Assert.Equal(0, Call(d, FALLOCATE, 2, Body(1UL, 100001L, 5000L, FALLOC_ZERO_RANGE, 0u)).Error);
        Assert.Equal(0, Call(d, FALLOCATE, 2, Body(1UL, 200001L, 5000L, FALLOC_ZERO_RANGE | FALLOC_KEEP_SIZE, 0u)).Error);
        Assert.Equal(2, _dev.Zeroes);
        Assert.True(_dev.Bytes.AsSpan(100001, 5000).IndexOfAnyExcept((byte)0) < 0);
        Assert.NotEqual(0, _dev.Bytes[100000]);

        Assert.Equal(0, Call(d, FALLOCATE, 2, Body(1UL, 0L, (long)Size, 0u, 0u)).Error); // preallocate within size
        Assert.Equal(Errno.ENOSPC, Call(d, FALLOCATE, 2, Body(1UL, 0L, Size + 1L, 0u, 0u)).Error);
        Assert.Equal(Errno.ENOSPC, Call(d, FALLOCATE, 2, Body(1UL, Size - 10L, 100L, FALLOC_ZERO_RANGE, 0u)).Error);
        // Punching past the end with KEEP_SIZE is clamped, as on a local file.
        Assert.Equal(0, Call(d, FALLOCATE, 2, Body(1UL, Size - 4096L, 1L << 30, FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE, 0u)).Error);
        Assert.Equal(Errno.EOPNOTSUPP, Call(d, FALLOCATE, 2, Body(1UL, 0L, 4096L, 0x08u /*collapse*/, 0u)).Error);
        Assert.Equal(Errno.EOPNOTSUPP, Call(d, FALLOCATE, 2, Body(1UL, 0L, 4096L, FALLOC_PUNCH_HOLE, 0u)).Error);
        Assert.Equal(Errno.EINVAL, Call(d, FALLOCATE, 2, Body(1UL, 0L, 0L, 0u, 0u)).Error);
    }

    [Fact]
    public void Lseek_finds_data_and_holes_from_extents()
    {
        _dev.Write(3 * 4096 + 5, new byte[100]);      // block 3
        _dev.Write(10 * 4096, new byte[2 * 4096]);    // blocks 10, 11
        var d = NewDispatcher();
        long Seek(long off, uint whence, out int err)
        {
            var r = Call(d, LSEEK, 2, Body(1UL, off, whence, 0u));
            err = r.Error;
            return err == 0 ? (long)U64(r.Payload, 0) : -1;
        }
        Assert.Equal(3 * 4096, Seek(0, SEEK_DATA, out _));
        Assert.Equal(3 * 4096 + 17, Seek(3 * 4096 + 17, SEEK_DATA, out _));
        Assert.Equal(4 * 4096, Seek(3 * 4096, SEEK_HOLE, out _));
        Assert.Equal(0, Seek(0, SEEK_HOLE, out _));
        Assert.Equal(10 * 4096, Seek(4 * 4096, SEEK_DATA, out _));
        Assert.Equal(12 * 4096, Seek(10 * 4096, SEEK_HOLE, out _));
        Seek(12 * 4096, SEEK_DATA, out int e1);
        Assert.Equal(Errno.ENXIO, e1);                // only holes after the last data
        Seek(Size, SEEK_DATA, out int e2);
        Assert.Equal(Errno.ENXIO, e2);                // past the end
        Seek(Size, SEEK_HOLE, out int e3);
        Assert.Equal(Errno.ENXIO, e3);
        Seek(0, 0 /*SEEK_SET*/, out int e4);
        Assert.Equal(Errno.EINVAL, e4);

        var full = new TestDevice(8192);
        full.Write(0, new byte[8192]);
        var d2 = NewDispatcher(dev: full);
        var r = Call(d2, LSEEK, 2, Body(1UL, 100L, SEEK_HOLE, 0u));
        Assert.Equal(8192UL, U64(r.Payload, 0)); // the end of the file is a hole
    }

    [Fact]
    public void Setattr_refuses_size_changes_but_accepts_the_current_size_and_remembers_mode_and_owner()
    {
        var d = NewDispatcher();
        byte[] SetBody(uint valid, ulong size = 0, uint mode = 0, uint uid = 0, uint gid = 0) =>
            Body(valid, 0u, 0UL, size, 0UL, 0UL, 0UL, 0UL, 0u, 0u, 0u, mode, 0u, uid, gid, 0u);

        Assert.Equal(Errno.EPERM, Call(d, SETATTR, 2, SetBody(FATTR_SIZE, 0)).Error);
        Assert.Equal(Errno.EPERM, Call(d, SETATTR, 2, SetBody(FATTR_SIZE, Size * 2UL)).Error);
        Assert.Equal(Errno.EPERM, Call(d, SETATTR, 2, SetBody(FATTR_SIZE | FATTR_MODE, 10, 0x180)).Error);
        var same = Call(d, SETATTR, 2, SetBody(FATTR_SIZE, (ulong)Size));
        Assert.Equal(0, same.Error);
        Assert.Equal((ulong)Size, U64(same.Payload, 16 + 8));
        // The refused request changed nothing.
        Assert.Equal(S_IFREG | 0x1A4u, U32(Call(d, GETATTR, 2, new byte[16]).Payload, 16 + 60));

        var r = Call(d, SETATTR, 2, SetBody(FATTR_MODE | FATTR_UID | FATTR_GID, 0, S_IFREG | 0x180u, 107, 108));
        Assert.Equal(0, r.Error);
        var attr = Call(d, GETATTR, 2, new byte[16]).Payload;
        Assert.Equal(S_IFREG | 0x180u, U32(attr, 16 + 60)); // 0600
        Assert.Equal(107u, U32(attr, 16 + 68));
        Assert.Equal(108u, U32(attr, 16 + 72));
        Assert.Equal(Errno.EINVAL, Call(d, SETATTR, 2, new byte[20]).Error);
    }

    // ---- extended attributes (what libvirt's DAC/SELinux drivers do to a disk) ------------------------------

    private static byte[] SetXattrBody(string name, byte[] value, uint flags = 0) =>
        Body((uint)value.Length, flags, Encoding.UTF8.GetBytes(name + "\0"), value);

    private static byte[] GetXattrBody(uint size, string name) => Body(size, 0u, Encoding.UTF8.GetBytes(name + "\0"));

    [Fact]
    public void Xattrs_set_get_list_remove_like_libvirts_remember_owner()
    {
        var d = NewDispatcher();
        byte[] dac = "+0:+0"u8.ToArray(), refs = "1"u8.ToArray();
        Assert.Equal(0, Call(d, SETXATTR, 2, SetXattrBody("trusted.libvirt.security.dac", dac)).Error);
        Assert.Equal(0, Call(d, SETXATTR, 2, SetXattrBody("trusted.libvirt.security.ref_dac", refs)).Error);
        Assert.Equal(0, Call(d, SETXATTR, 2, SetXattrBody("user.note", [])).Error); // an empty value is a value
        Assert.Equal(0, Call(d, SETXATTR, 2, SetXattrBody("security.selinux", "system_u:object_r:svirt_image_t:s0\0"u8.ToArray())).Error);

        // Size probe, then the value; a buffer one byte short is ERANGE.
        var probe = Call(d, GETXATTR, 2, GetXattrBody(0, "trusted.libvirt.security.dac"));
        Assert.Equal(0, probe.Error);
        Assert.Equal((uint)dac.Length, U32(probe.Payload, 0));
        Assert.Equal(dac, Call(d, GETXATTR, 2, GetXattrBody(64, "trusted.libvirt.security.dac")).Payload);
        Assert.Equal(Errno.ERANGE, Call(d, GETXATTR, 2, GetXattrBody((uint)dac.Length - 1, "trusted.libvirt.security.dac")).Error);
        Assert.Empty(Call(d, GETXATTR, 2, GetXattrBody(16, "user.note")).Payload);
        Assert.Equal(Errno.ENODATA, Call(d, GETXATTR, 2, GetXattrBody(64, "trusted.other")).Error);

        byte[] names = "trusted.libvirt.security.dac\0trusted.libvirt.security.ref_dac\0user.note\0security.selinux\0"u8.ToArray();
        var listProbe = Call(d, LISTXATTR, 2, Body(0u, 0u));
        Assert.Equal((uint)names.Length, U32(listProbe.Payload, 0));
        Assert.Equal(names, Call(d, LISTXATTR, 2, Body(4096u, 0u)).Payload);
        Assert.Equal(Errno.ERANGE, Call(d, LISTXATTR, 2, Body((uint)names.Length - 1, 0u)).Error);

        // Restore: libvirt replaces the count, then removes both names.
        Assert.Equal(0, Call(d, SETXATTR, 2, SetXattrBody("trusted.libvirt.security.ref_dac", "2"u8.ToArray(), XattrStore.XATTR_REPLACE)).Error);
        Assert.Equal("2"u8.ToArray(), Call(d, GETXATTR, 2, GetXattrBody(8, "trusted.libvirt.security.ref_dac")).Payload);
        Assert.Equal(0, Call(d, REMOVEXATTR, 2, Encoding.UTF8.GetBytes("trusted.libvirt.security.dac\0")).Error);
        Assert.Equal(Errno.ENODATA, Call(d, REMOVEXATTR, 2, Encoding.UTF8.GetBytes("trusted.libvirt.security.dac\0")).Error);
        Assert.Equal(Errno.ENODATA, Call(d, GETXATTR, 2, GetXattrBody(64, "trusted.libvirt.security.dac")).Error);
        // The status directory and the root keep nothing.
        Assert.Equal(Errno.EOPNOTSUPP, Call(d, SETXATTR, 1, SetXattrBody("user.x", dac)).Error);
        Assert.Equal(0u, U32(Call(d, LISTXATTR, 1, Body(0u, 0u)).Payload, 0));
    }

    [Fact]
    public void Xattr_create_and_replace_flags_namespaces_and_limits()
    {
        var d = NewDispatcher();
        Assert.Equal(Errno.ENODATA, Call(d, SETXATTR, 2, SetXattrBody("user.a", [1], XattrStore.XATTR_REPLACE)).Error);
        Assert.Equal(0, Call(d, SETXATTR, 2, SetXattrBody("user.a", [1], XattrStore.XATTR_CREATE)).Error);
        Assert.Equal(Errno.EEXIST, Call(d, SETXATTR, 2, SetXattrBody("user.a", [2], XattrStore.XATTR_CREATE)).Error);
        Assert.Equal(new byte[] { 1 }, Call(d, GETXATTR, 2, GetXattrBody(8, "user.a")).Payload);
        Assert.Equal(Errno.EINVAL, Call(d, SETXATTR, 2, SetXattrBody("user.a", [2], 4)).Error);
        // POSIX ACLs and unknown namespaces are not kept.
        Assert.Equal(Errno.EOPNOTSUPP, Call(d, SETXATTR, 2, SetXattrBody("system.posix_acl_access", [2])).Error);
        Assert.Equal(Errno.EOPNOTSUPP, Call(d, SETXATTR, 2, SetXattrBody("user.", [2])).Error);
        Assert.Equal(Errno.EOPNOTSUPP, Call(d, SETXATTR, 2, SetXattrBody("other.x", [2])).Error);
        // A size field that disagrees with the bytes sent, a missing name: EINVAL.
        Assert.Equal(Errno.EINVAL, Call(d, SETXATTR, 2, Body(5u, 0u, "user.b\0"u8.ToArray(), new byte[2])).Error);
        Assert.Equal(Errno.EINVAL, Call(d, SETXATTR, 2, Body(0u, 0u)).Error);
        Assert.Equal(Errno.EINVAL, Call(d, GETXATTR, 2, Body(0u, 0u, "user.nonul"u8.ToArray())).Error);

        // Bounded: at most MaxCount names and MaxTotalBytes per file.
        for (int i = 1; i < XattrStore.MaxCount; i++)
            Assert.Equal(0, Call(d, SETXATTR, 2, SetXattrBody($"user.n{i}", [1])).Error);
        Assert.Equal(Errno.ENOSPC, Call(d, SETXATTR, 2, SetXattrBody("user.onemore", [1])).Error);
        Assert.Equal(0, Call(d, SETXATTR, 2, SetXattrBody("user.n1", [9])).Error); // replacing still works
        for (int i = 1; i < 10; i++) Assert.Equal(0, Call(d, REMOVEXATTR, 2, Encoding.UTF8.GetBytes($"user.n{i}\0")).Error);
        var big = new byte[XattrStore.MaxValueBytes];
        for (int i = 0; i < 3; i++) Assert.Equal(0, Call(d, SETXATTR, 2, SetXattrBody($"user.big{i}", big)).Error);
        Assert.Equal(Errno.ENOSPC, Call(d, SETXATTR, 2, SetXattrBody("user.big3", big)).Error);
        Assert.Equal(Errno.E2BIG, Call(d, SETXATTR, 2, SetXattrBody("user.huge", new byte[XattrStore.MaxValueBytes + 1])).Error);
        Assert.Equal(big.Length, Call(d, GETXATTR, 2, GetXattrBody(1 << 20, "user.big2")).Payload.Length);
    }

    [Fact]
    public void Xattr_changes_are_refused_on_a_read_only_mount()
    {
        var d = NewDispatcher(new FuseOptions { ReadOnly = true });
        Assert.Equal(Errno.EROFS, Call(d, SETXATTR, 2, SetXattrBody("trusted.libvirt.security.dac", [1])).Error);
        Assert.Equal(Errno.EROFS, Call(d, REMOVEXATTR, 2, "user.a\0"u8.ToArray()).Error);
        Assert.Equal(Errno.ENODATA, Call(d, GETXATTR, 2, GetXattrBody(8, "user.a")).Error);
    }

    // ---- -o partitions ------------------------------------------------------------------------------------

    private static Fvd.Core.Partitions.MbrEntry Mbr(uint first, uint count) => new(0, 0x83, first, count);

    private static byte[] MbrSector(params Fvd.Core.Partitions.MbrEntry[] entries)
    {
        var all = new Fvd.Core.Partitions.MbrEntry[4];
        entries.CopyTo(all, 0);
        var sector = new byte[512];
        new Fvd.Core.Partitions.MasterBootRecord(all).WriteTo(sector);
        return sector;
    }

    [Fact]
    public void Partitions_appear_after_a_table_write_are_bounded_and_follow_table_changes()
    {
        var d = NewDispatcher(new FuseOptions { Partitions = true });
        Assert.Equal(Errno.ENOENT, Call(d, LOOKUP, RootId, "disk-p1.raw\0"u8).Error);
        // p1: 128 KiB at 128 KiB, p2: 128 KiB at 512 KiB; written through the disk like sfdisk does.
        var table = MbrSector(Mbr(256, 256), Mbr(1024, 256));
        Assert.Equal(0, Call(d, WRITE, 2, WriteBody(0, table)).Error);

        var p1 = Call(d, LOOKUP, RootId, "disk-p1.raw\0"u8);
        Assert.Equal(0, p1.Error);
        ulong p1Id = U64(p1.Payload, 0);
        Assert.Equal(0UL, U64(p1.Payload, 16));           // entry timeout 0: names follow the table
        Assert.Equal(128UL * 1024, U64(p1.Payload, 40 + 8)); // attr.size
        Assert.Equal([".", "..", "disk.raw", "disk-p1.raw", "disk-p2.raw"], Names(Call(d, READDIR, RootId, ReadBody(0, 4096)).Payload, plus: false));
        ulong p2Id = U64(Call(d, LOOKUP, RootId, "disk-p2.raw\0"u8).Payload, 0);

        // A write that reaches past the partition's end is short, one at its end is ENOSPC; the neighbour is untouched.
        var data = Enumerable.Repeat((byte)0xAB, 200).ToArray();
        var w = Call(d, WRITE, p1Id, WriteBody(128 * 1024 - 100, data));
        Assert.Equal(0, w.Error);
        Assert.Equal(100u, U32(w.Payload, 0));
        Assert.Equal(Errno.ENOSPC, Call(d, WRITE, p1Id, WriteBody(128 * 1024, data)).Error);
        Assert.Equal(0xAB, _dev.Bytes[256 * 1024 - 1]);
        Assert.Equal(0, _dev.Bytes[256 * 1024]);
        Assert.Equal(_dev.Bytes.AsSpan(256 * 1024 - 100, 100).ToArray(), Call(d, READ, p1Id, ReadBody(128 * 1024 - 100, 4096)).Payload);
        // SEEK_DATA translated into the partition; FSYNC flushes the image.
        var seek = Call(d, LSEEK, p1Id, Body(1UL, 0UL, SEEK_DATA, 0u));
        Assert.Equal(0, seek.Error);
        Assert.Equal(128UL * 1024 - 4096, U64(seek.Payload, 0));
        Assert.Equal(Errno.ENXIO, Call(d, LSEEK, p2Id, Body(1UL, 0UL, SEEK_DATA, 0u)).Error);
        int flushes = _dev.Flushes;
        Assert.Equal(0, Call(d, FSYNC, p1Id, Body(1UL, 0u, 0u)).Error);
        Assert.Equal(flushes + 1, _dev.Flushes);
        // Punching a hole past the partition's end is clamped to it.
        Assert.Equal(0, Call(d, FALLOCATE, p2Id, Body(1UL, 0L, 1L << 20, FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE, 0u)).Error);

        // The table changes through the disk: p1 moves, p2 goes away. Their nodes answer EIO from now on.
        Assert.Equal(0, Call(d, WRITE, 2, WriteBody(0, MbrSector(Mbr(300, 100)))).Error);
        Assert.Equal(Errno.ENOENT, Call(d, LOOKUP, RootId, "disk-p2.raw\0"u8).Error);
        var moved = Call(d, LOOKUP, RootId, "disk-p1.raw\0"u8);
        Assert.NotEqual(p1Id, U64(moved.Payload, 0));
        Assert.Equal(100UL * 512, U64(moved.Payload, 40 + 8));
        Assert.Equal(Errno.EIO, Call(d, READ, p2Id, ReadBody(0, 512)).Error);
        Assert.Equal(Errno.EIO, Call(d, WRITE, p1Id, WriteBody(0, data)).Error);
        Assert.Equal(0, _dev.Bytes[128 * 1024]); // the old p1's first byte was not written
        Assert.Equal([".", "..", "disk.raw", "disk-p1.raw"], Names(Call(d, READDIR, RootId, ReadBody(0, 4096)).Payload, plus: false));
    }

    [Fact]
    public void Partitions_turn_off_passthrough_and_page_cache_opens()
    {
        var d = NewDispatcher(new FuseOptions { Partitions = true });
        var open = Call(d, OPEN, 2, Body(2u, 0u));
        Assert.Equal(FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES, U32(open.Payload, 8));
    }

    [Fact]
    public void Hot_path_requests_allocate_nothing()
    {
        var d = NewDispatcher();
        var read = Request(READ, 2, ReadBody(4096, 65536), 1);
        var write = Request(WRITE, 2, WriteBody(8191, new byte[65536]), 2);
        var getattr = Request(GETATTR, 2, new byte[16], 3);
        var flush = Request(FLUSH, 2, Body(1UL, 0u, 0u, 0UL), 4);
        // Tiered JIT recompiles the methods during the first rounds, which can allocate once; a per-request
        // allocation would show in every round, so the best of five rounds must be exactly zero.
        long best = long.MaxValue;
        for (int round = 0; round < 5; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 1000; i++)
            {
                d.Handle(read, _reply);
                d.Handle(write, _reply);
                d.Handle(getattr, _reply);
                d.Handle(flush, _reply);
            }
            best = Math.Min(best, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.Equal(0, best);
    }

    // ---- odd and hostile input -----------------------------------------------------------------------------

    [Fact]
    public void Unknown_opcodes_get_ENOSYS_and_forget_gets_no_reply()
    {
        var d = NewDispatcher();
        Assert.Equal(Errno.ENOSYS, Call(d, 9999, 2, new byte[8]).Error);
        Assert.Equal(Errno.ENOSYS, Call(d, 39 /*IOCTL*/, 2, new byte[32]).Error);
        Assert.Equal(0, Call(d, FORGET, 2, Body(1UL)).Length);
        Assert.Equal(0, Call(d, BATCH_FORGET, 0, Body(1u, 0u, 2UL, 1UL)).Length);
        Assert.Equal(0, Call(d, INTERRUPT, 0, Body(5UL)).Length);
        Assert.Equal(Errno.ENODATA, Call(d, GETXATTR, 2, Body(0u, 0u, "user.x\0"u8.ToArray())).Error);
        // The root directory too: ls -l asks it for security.selinux and reports anything but ENODATA.
        Assert.Equal(Errno.ENODATA, Call(d, GETXATTR, 1, Body(0u, 0u, "security.selinux\0"u8.ToArray())).Error);
        var list = Call(d, LISTXATTR, 2, Body(0u, 0u));
        Assert.Equal(0, list.Error);
        Assert.Equal(0u, U32(list.Payload, 0));
    }

    [Fact]
    public void Malformed_lengths_get_error_replies_and_never_throw()
    {
        var d = NewDispatcher();
        // Header length field disagreeing with the bytes read.
        var req = Request(GETATTR, 2, new byte[16], 555);
        BinaryPrimitives.WriteUInt32LittleEndian(req, 1000);
        Assert.Equal(Errno.EINVAL, Parse(d.Handle(req, _reply), 555).Error);
        // Too short to carry a unique id: nothing to answer.
        Assert.Equal(0, d.Handle(new byte[10], _reply));
        // Header only, bodies missing.
        foreach (var op in new[] { READ, WRITE, SETATTR, OPEN, FALLOCATE, LSEEK, FSYNC, READDIR, ACCESS })
            Assert.Equal(Errno.EINVAL, Call(d, op, 2, new byte[4]).Error);
        // WRITE claiming more data than it carries.
        Assert.Equal(Errno.EINVAL, Call(d, WRITE, 2, WriteBody(0, new byte[10], sizeField: 5000)).Error);
        // READ bigger than any reply buffer, negative offsets.
        Assert.Equal(Errno.EINVAL, Call(d, READ, 2, ReadBody(0, uint.MaxValue)).Error);
        Assert.Equal(Errno.EINVAL, Call(d, READ, 2, ReadBody(-5, 10)).Error);
        Assert.Equal(Errno.EINVAL, Call(d, WRITE, 2, WriteBody(-5, new byte[10])).Error);
        // Extension length pointing past the end.
        var ext = Request(GETATTR, 2, new byte[16], 556);
        BinaryPrimitives.WriteUInt16LittleEndian(ext.AsSpan(36), 100);
        Assert.Equal(Errno.EINVAL, Parse(d.Handle(ext, _reply), 556).Error);
    }

    [Fact]
    public void Random_garbage_requests_always_get_a_well_formed_reply_or_none()
    {
        var d = NewDispatcher();
        var rng = new Random(12345);
        for (int i = 0; i < 20000; i++)
        {
            var req = new byte[rng.Next(0, 300)];
            rng.NextBytes(req);
            if (req.Length >= 8)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(req, (uint)req.Length);
                BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(4), (uint)rng.Next(0, 60));
            }
            if (req.Length >= 24) BinaryPrimitives.WriteUInt64LittleEndian(req.AsSpan(16), (ulong)rng.Next(0, 4));
            if (req.Length >= 40) req[36] = req[37] = 0;
            int n = d.Handle(req, _reply);
            if (n == 0) continue;
            Assert.InRange(n, OutHeaderSize, _reply.Length);
            Assert.Equal((uint)n, BinaryPrimitives.ReadUInt32LittleEndian(_reply));
            int err = BinaryPrimitives.ReadInt32LittleEndian(_reply.AsSpan(4));
            Assert.InRange(err, -200, 0);
        }
    }

    [Fact]
    public void Device_exceptions_become_errno_and_unknown_exceptions_EIO()
    {
        var d = NewDispatcher();
        _dev.FailWith = new FvdException(FvdErrorKind.CorruptImage, "bad table");
        Assert.Equal(Errno.EIO, Call(d, READ, 2, ReadBody(0, 100)).Error);
        _dev.FailWith = new FvdException(FvdErrorKind.NoSpace, "host full");
        Assert.Equal(Errno.ENOSPC, Call(d, WRITE, 2, WriteBody(0, new byte[10])).Error);
        _dev.FailWith = new FvdException(FvdErrorKind.NotSupported, "no zeroing");
        Assert.Equal(Errno.EOPNOTSUPP, Call(d, FALLOCATE, 2, Body(1UL, 0L, 4096L, FALLOC_ZERO_RANGE, 0u)).Error);
        _dev.FailWith = new InvalidOperationException("bug");
        Assert.Equal(Errno.EIO, Call(d, READ, 2, ReadBody(0, 100)).Error);
    }

    [Theory]
    [InlineData(FvdErrorKind.Io, false, Errno.EIO)]
    [InlineData(FvdErrorKind.OutOfBounds, false, Errno.EINVAL)]
    [InlineData(FvdErrorKind.OutOfBounds, true, Errno.ENOSPC)]
    [InlineData(FvdErrorKind.ReadOnly, false, Errno.EROFS)]
    [InlineData(FvdErrorKind.NoSpace, false, Errno.ENOSPC)]
    [InlineData(FvdErrorKind.NotSupported, false, Errno.EOPNOTSUPP)]
    [InlineData(FvdErrorKind.PermissionDenied, false, Errno.EACCES)]
    [InlineData(FvdErrorKind.InvalidArgument, false, Errno.EINVAL)]
    [InlineData(FvdErrorKind.CorruptImage, false, Errno.EIO)]
    public void Errno_mapping(FvdErrorKind kind, bool writing, int expected) =>
        Assert.Equal(expected, Errno.From(new FvdException(kind, "x"), writing));

    [Fact]
    public void Statfs_and_access()
    {
        _dev.Write(0, new byte[8192]);
        var d = NewDispatcher();
        var s = Call(d, STATFS, RootId, []);
        Assert.Equal(0, s.Error);
        Assert.Equal((ulong)Size / 4096, U64(s.Payload, 0));
        Assert.Equal((ulong)Size / 4096 - 2, U64(s.Payload, 8));
        Assert.Equal(0, Call(d, ACCESS, 2, Body(4u, 0u), uid: 1000).Error);          // others may read 0644
        Assert.Equal(Errno.EACCES, Call(d, ACCESS, 2, Body(2u, 0u), uid: 1000).Error); // but not write
        Assert.Equal(0, Call(d, ACCESS, 2, Body(6u, 0u), uid: 0).Error);
    }
}
