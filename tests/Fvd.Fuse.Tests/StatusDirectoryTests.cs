// The .fvd status directory and the passthrough negotiation, driven with request bytes (no kernel).
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using static Fvd.Fuse.FuseProtocol;

namespace Fvd.Fuse.Tests;

public sealed class StatusDirectoryTests
{
    private readonly byte[] _reply = new byte[BufferSize];
    private ulong _unique = 1;

    private sealed class Src : IStatusSource, IPassthroughSource
    {
        public string? PassthroughPath { get; set; }
        public void WriteStatus(Utf8JsonWriter w) => w.WriteNumber("answer", 42);
    }

    private (int Error, byte[] Payload) Call(FuseDispatcher d, uint op, ulong node, byte[] body)
    {
        var r = new byte[InHeaderSize + body.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(r, (uint)r.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(r.AsSpan(4), op);
        BinaryPrimitives.WriteUInt64LittleEndian(r.AsSpan(8), ++_unique);
        BinaryPrimitives.WriteUInt64LittleEndian(r.AsSpan(16), node);
        body.CopyTo(r, InHeaderSize);
        int n = d.Handle(r, _reply);
        return (-BinaryPrimitives.ReadInt32LittleEndian(_reply.AsSpan(4)), _reply.AsSpan(OutHeaderSize, n - OutHeaderSize).ToArray());
    }

    private static byte[] Init(ulong flags)
    {
        var b = new byte[64];
        BinaryPrimitives.WriteUInt32LittleEndian(b, 7);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), 45);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), 131072);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(12), (uint)flags | (uint)INIT_EXT);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16), (uint)(flags >> 32));
        return b;
    }

    private static byte[] ReadIn(ulong fh, long off, uint size)
    {
        var b = new byte[ReadInSize];
        BinaryPrimitives.WriteUInt64LittleEndian(b, fh);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(8), off);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16), size);
        return b;
    }

    private static byte[] Name(string s) => Encoding.UTF8.GetBytes(s + "\0");

    private static List<string> Names(byte[] buf)
    {
        var names = new List<string>();
        for (int pos = 0; pos < buf.Length; pos += (24 + (int)BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(pos + 16)) + 7) & ~7)
            names.Add(Encoding.UTF8.GetString(buf, pos + 24, (int)BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(pos + 16))));
        return names;
    }

    [Fact]
    public void Status_directory_lists_json_files_whose_size_matches_what_open_and_read_return()
    {
        var src = new Src();
        var d = new FuseDispatcher([new FuseImage("vm1.raw", new TestDevice(8192)) { Status = src },
            new FuseImage("plain.raw", new TestDevice(4096))], new FuseOptions { StatusDirectory = true });
        Assert.Equal(0, Call(d, INIT, 0, Init(ASYNC_READ)).Error);
        Assert.Equal([".", "..", "vm1.raw", "plain.raw", ".fvd"], Names(Call(d, READDIR, RootId, ReadIn(0, 0, 4096)).Payload));

        var dir = Call(d, LOOKUP, RootId, Name(".fvd"));
        Assert.Equal(0, dir.Error);
        ulong dirId = BinaryPrimitives.ReadUInt64LittleEndian(dir.Payload);
        Assert.Equal(S_IFDIR | 0x16Du, BinaryPrimitives.ReadUInt32LittleEndian(dir.Payload.AsSpan(40 + 60)));
        Assert.Equal([".", "..", "vm1.json", "plain.json"], Names(Call(d, READDIR, dirId, ReadIn(0, 0, 4096)).Payload));

        var file = Call(d, LOOKUP, dirId, Name("vm1.json"));
        ulong id = BinaryPrimitives.ReadUInt64LittleEndian(file.Payload);
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(file.Payload.AsSpan(24))); // attr timeout 0
        long size = (long)BinaryPrimitives.ReadUInt64LittleEndian(file.Payload.AsSpan(40 + 8));
        var open = Call(d, OPEN, id, new byte[8]);
        Assert.Equal(0, open.Error);
        Assert.Equal(FOPEN_DIRECT_IO, BinaryPrimitives.ReadUInt32LittleEndian(open.Payload.AsSpan(8)));
        ulong fh = BinaryPrimitives.ReadUInt64LittleEndian(open.Payload);
        var content = Call(d, READ, id, ReadIn(fh, 0, 65536)).Payload;
        Assert.Equal(size, content.Length);
        using (var doc = JsonDocument.Parse(content))
        {
            Assert.Equal("vm1.raw", doc.RootElement.GetProperty("name").GetString());
            Assert.Equal(42, doc.RootElement.GetProperty("answer").GetInt32());
            Assert.False(doc.RootElement.GetProperty("passthrough").GetBoolean());
        }
        Assert.Empty(Call(d, READ, id, ReadIn(fh, content.Length, 4096)).Payload);
        var release = new byte[ReleaseInSize];
        BinaryPrimitives.WriteUInt64LittleEndian(release, fh);
        Assert.Equal(0, Call(d, RELEASE, id, release).Error);
        Assert.Equal(Errno.EBADF, Call(d, READ, id, ReadIn(fh, 0, 10)).Error);

        var plain = Call(d, LOOKUP, dirId, Name("plain.json"));
        ulong plainId = BinaryPrimitives.ReadUInt64LittleEndian(plain.Payload);
        ulong pfh = BinaryPrimitives.ReadUInt64LittleEndian(Call(d, OPEN, plainId, new byte[8]).Payload);
        using (var doc = JsonDocument.Parse(Call(d, READ, plainId, ReadIn(pfh, 0, 65536)).Payload))
            Assert.Equal("raw", doc.RootElement.GetProperty("format").GetString());

        var writeOpen = new byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(writeOpen, 2); // O_RDWR
        Assert.Equal(Errno.EACCES, Call(d, OPEN, id, writeOpen).Error);
        Assert.Equal(Errno.ENOENT, Call(d, LOOKUP, dirId, Name("nope.json")).Error);
        Assert.Equal(Errno.EPERM, Call(d, SETATTR, id, new byte[SetattrInSize]).Error);
        Assert.Equal(Errno.EISDIR, Call(d, OPEN, dirId, new byte[8]).Error);
    }

    [Fact]
    public void Without_the_option_there_is_no_status_directory()
    {
        var d = new FuseDispatcher([new FuseImage("vm1.raw", new TestDevice(4096))], new FuseOptions());
        Assert.Equal(0, Call(d, INIT, 0, Init(ASYNC_READ)).Error);
        Assert.Equal(Errno.ENOENT, Call(d, LOOKUP, RootId, Name(".fvd")).Error);
    }

    [Theory]
    [InlineData(true, true, true)]
    [InlineData(true, false, false)]   // passthrough=off
    [InlineData(false, true, false)]   // the kernel does not offer it
    public void Init_negotiates_passthrough_with_a_stack_depth_only_when_wanted_and_offered(bool offered, bool wanted, bool expect)
    {
        var d = new FuseDispatcher([new FuseImage("vm1.raw", new TestDevice(4096)) { Passthrough = new Src() }],
            new FuseOptions { Passthrough = wanted });
        var r = Call(d, INIT, 0, Init(ASYNC_READ | (offered ? PASSTHROUGH : 0)));
        Assert.Equal(0, r.Error);
        ulong flags2 = BinaryPrimitives.ReadUInt32LittleEndian(r.Payload.AsSpan(32));
        Assert.Equal(expect, (flags2 << 32 & PASSTHROUGH) != 0);
        Assert.Equal(expect ? MaxStackDepth : 0u, BinaryPrimitives.ReadUInt32LittleEndian(r.Payload.AsSpan(36)));
        Assert.Equal(expect, d.PassthroughAvailable);
    }

    [Fact]
    public void Open_answers_passthrough_with_the_backing_id_and_never_keep_cache()
    {
        var src = new Src { PassthroughPath = "/some/data" };
        var d = new FuseDispatcher([new FuseImage("vm1.raw", new TestDevice(4096)) { Passthrough = src }], new FuseOptions());
        Assert.Equal(0, Call(d, INIT, 0, Init(PASSTHROUGH)).Error);
        string? asked = null;
        d.BackingOpen = (path, ro) => { asked = path; return 7; };
        var open = Call(d, OPEN, 2, new byte[8]);
        Assert.Equal(0, open.Error);
        Assert.Equal(FOPEN_PASSTHROUGH, BinaryPrimitives.ReadUInt32LittleEndian(open.Payload.AsSpan(8)));
        Assert.Equal(7, BinaryPrimitives.ReadInt32LittleEndian(open.Payload.AsSpan(12)));
        Assert.Equal("/some/data", asked);
        var odirect = new byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(odirect, O_DIRECT);
        Assert.Equal(FOPEN_PASSTHROUGH, BinaryPrimitives.ReadUInt32LittleEndian(Call(d, OPEN, 2, odirect).Payload.AsSpan(8)));
    }
}
