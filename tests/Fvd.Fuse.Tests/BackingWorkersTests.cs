// Requests that wait on a slow template (HTTP) are served by backing workers: the dispatcher and workers driven
// with request bytes, over a real FvdImage whose template server stalls. Local reads, writes and FSYNC are
// answered while every worker waits; INTERRUPT answers EINTR once and an interrupted write changes nothing.
using System.Buffers.Binary;
using System.Collections.Concurrent;
using Fvd.Core.Image;
using Fvd.Core.Tests;
using static Fvd.Fuse.FuseProtocol;

namespace Fvd.Fuse.Tests;

internal sealed class ImageLocality(FvdImage img) : IBackingLocality
{
    public bool MayReadBacking(long offset, long length, bool write) => img.MayReadBacking(offset, length, write);
}

public sealed class BackingWorkersTests : IDisposable
{
    private const int Block = 4096, TemplateSize = 1 << 20;
    private readonly TempDir _dir = new();
    private readonly byte[] _template = Kernel.Pattern(TemplateSize, 5);
    private readonly StallingHttpServer _web;
    private readonly FvdImage _img;
    private readonly FuseDispatcher _d;
    private readonly byte[] _reply = new byte[BufferSize];
    private readonly ConcurrentQueue<(ulong Unique, int Error, byte[] Payload)> _sent = new();
    private readonly byte[] _local = Kernel.Pattern(Block, 6);

    public BackingWorkersTests()
    {
        _web = new StallingHttpServer(_template);
        FvdImage.Create(_dir.File("vm.fvd"), new FvdCreateOptions
        {
            VirtualSize = 2 * TemplateSize, BackingFile = _web.Url, BlockSize = Block, CopyOnRead = false,
        });
        _img = FvdImage.Open(_dir.File("vm.fvd"));
        _img.Write(0, _local); // block 0 is local from now on
        _d = new FuseDispatcher([new FuseImage("vm.raw", _img) { Locality = new ImageLocality(_img) }], new FuseOptions());
        var init = DispatcherTests.Body(7u, 38u, 131072u, 0u, 0u, new byte[44]);
        Assert.Equal(0, Error(_d.Handle(DispatcherTests.Request(INIT, 0, init, 1), _reply)));
    }

    public void Dispose()
    {
        _web.Stall = false;
        _img.Dispose();
        _web.Dispose();
        _dir.Dispose();
    }

    private int Error(int n) => n == 0 ? 0 : -BinaryPrimitives.ReadInt32LittleEndian(_reply.AsSpan(4));

    private void Sink(ReadOnlySpan<byte> reply) =>
        _sent.Enqueue((BinaryPrimitives.ReadUInt64LittleEndian(reply[8..]), -BinaryPrimitives.ReadInt32LittleEndian(reply[4..]),
            reply[OutHeaderSize..].ToArray()));

    private static byte[] ReadReq(ulong unique, long offset, uint size) =>
        DispatcherTests.Request(READ, 2, DispatcherTests.Body(2UL, offset, size, 0u, 0UL, 0u, 0u), unique);

    private static byte[] WriteReq(ulong unique, long offset, byte[] data) =>
        DispatcherTests.Request(WRITE, 2, DispatcherTests.Body(2UL, offset, (uint)data.Length, 0u, 0UL, 0u, 0u, data), unique);

    private static byte[] InterruptReq(ulong target) =>
        DispatcherTests.Request(INTERRUPT, 0, DispatcherTests.Body(target), target | 1);

    private static void WaitUntil(Func<bool> cond, string what)
    {
        // A condition wait with a generous bound, not a timing assertion.
        for (int i = 0; !cond(); i++)
        {
            if (i > 3000) Assert.Fail($"timed out waiting for {what}");
            Thread.Sleep(10);
        }
    }

    private (ulong Unique, int Error, byte[] Payload) ReplyFor(ulong unique)
    {
        WaitUntil(() => _sent.Any(r => r.Unique == unique), $"the reply to #{unique}");
        return Assert.Single(_sent, r => r.Unique == unique);
    }

    [Fact]
    public void Local_io_and_fsync_are_answered_while_every_backing_worker_waits_on_the_template()
    {
        using var workers = new BackingWorkers(_d, 2, Sink);
        _web.Stall = true;
        for (ulong u = 10; u < 13; u++)
            Assert.True(workers.TryTake(ReadReq(u, 256 * 1024 + (long)u * Block, Block)));
        WaitUntil(() => _web.Stalled == 2, "both workers to wait on the template"); // the third is queued

        // The reader thread serves local I/O itself, at once.
        var local = ReadReq(20, 0, Block);
        Assert.False(workers.TryTake(local));
        Assert.Equal(0, Error(_d.Handle(local, _reply)));
        Assert.Equal(_local, _reply.AsSpan(OutHeaderSize, Block).ToArray());
        var free = WriteReq(21, TemplateSize + 8 * Block, _local); // past the template: always local
        var whole = WriteReq(22, 64 * Block, _local);              // a whole template block: no merge needed
        Assert.False(workers.TryTake(free));
        Assert.False(workers.TryTake(whole));
        Assert.Equal(0, Error(_d.Handle(free, _reply)));
        Assert.Equal(0, Error(_d.Handle(whole, _reply)));
        Assert.Equal(0, Error(_d.Handle(DispatcherTests.Request(FSYNC, 2, DispatcherTests.Body(2UL, 0u, 0u), 23), _reply)));
        Assert.Empty(_sent);

        // The queued third read, interrupted, is answered EINTR by the thread that read the INTERRUPT, at once
        // (the reply carries the read's unique); its worker later drops it.
        int n = _d.Handle(InterruptReq(12), _reply);
        Assert.Equal(OutHeaderSize, n);
        Assert.Equal(12UL, BinaryPrimitives.ReadUInt64LittleEndian(_reply.AsSpan(8)));
        Assert.Equal(Errno.EINTR, Error(n));

        _web.Stall = false;
        WaitUntil(() => _sent.Count == 2, "the template reads");
        using (workers) { } // drains: the dropped read sent nothing
        Assert.Equal(2, _sent.Count);
        Assert.Equal(0, _web.Stalled);
        for (ulong u = 10; u < 12; u++)
        {
            var r = ReplyFor(u);
            Assert.Equal(0, r.Error);
            Assert.Equal(_template.AsSpan(256 * 1024 + (int)u * Block, Block).ToArray(), r.Payload);
        }
    }

    [Fact]
    public void Interrupt_answers_EINTR_once_and_an_interrupted_write_changes_nothing()
    {
        using var workers = new BackingWorkers(_d, 2, Sink);
        _web.Stall = true;
        const long wOff = 300 * 1024 + 50; // partly covers a template block: it must read the block first
        var data = Kernel.Pattern(100, 7);
        Assert.True(workers.TryTake(ReadReq(100, 512 * 1024, 3 * Block)));
        Assert.True(workers.TryTake(WriteReq(102, wOff, data)));
        WaitUntil(() => _web.Stalled == 2, "both requests to wait on the template");

        Assert.Equal(0, _d.Handle(InterruptReq(100), _reply)); // INTERRUPT itself takes no reply
        Assert.Equal(Errno.EINTR, ReplyFor(100).Error);
        Assert.Equal(0, _d.Handle(InterruptReq(102), _reply));
        Assert.Equal(Errno.EINTR, ReplyFor(102).Error);
        WaitUntil(() => _web.Abandoned == 2, "the template reads to be abandoned");

        // Late or unknown interrupts are ignored; one that overtakes its request still cancels it.
        Assert.Equal(0, _d.Handle(InterruptReq(100), _reply));
        Assert.Equal(0, _d.Handle(InterruptReq(7777), _reply));
        Assert.Equal(0, _d.Handle(InterruptReq(104), _reply));
        Assert.True(workers.TryTake(ReadReq(104, 600 * 1024, Block)));
        Assert.Equal(Errno.EINTR, ReplyFor(104).Error);

        _web.Stall = false;
        Assert.True(workers.TryTake(ReadReq(106, 300 * 1024, Block)));
        var after = ReplyFor(106);
        Assert.Equal(0, after.Error);
        Assert.Equal(_template.AsSpan(300 * 1024, Block).ToArray(), after.Payload); // the write left no trace
        Assert.True(_img.MayReadBacking(wOff, data.Length, write: true), "the block's bit was set");
        Assert.Equal(4, _sent.Count); // one reply per request, none for the interrupts
    }

    [Fact]
    public void Interrupted_write_from_a_local_block_into_a_template_block_writes_neither()
    {
        // Block 0 is local, block 1 is in the template: the write covers the end of 0 and the start of 1. The
        // template read for block 1 comes first, so interrupting it leaves block 0 as it was too.
        using var workers = new BackingWorkers(_d, 1, Sink);
        _web.Stall = true;
        var data = Kernel.Pattern(Block + 100, 8);
        Assert.True(workers.TryTake(WriteReq(200, 100, data)));
        WaitUntil(() => _web.Stalled == 1, "the write to wait on the template");
        Assert.Equal(0, _d.Handle(InterruptReq(200), _reply));
        Assert.Equal(Errno.EINTR, ReplyFor(200).Error);
        _web.Stall = false;

        var back = new byte[2 * Block];
        _img.Read(0, back);
        Assert.Equal(_local, back.AsSpan(0, Block).ToArray());
        Assert.Equal(_template.AsSpan(Block, Block).ToArray(), back.AsSpan(Block).ToArray());
    }
}
