using System.Buffers.Binary;
using BenchmarkDotNet.Attributes;
using Fvd.Core.Io;
using Fvd.Fuse;
using static Fvd.Fuse.FuseProtocol;

/// <summary>
/// FuseDispatcher.Handle per opcode over a memory device: the daemon's own cost of a request, without the kernel.
/// The Allocated column must read "-" (nothing) for every opcode on the hot path.
/// </summary>
[MemoryDiagnoser]
public class DispatcherBench
{
    private FuseDispatcher _d = null!;
    private readonly byte[] _reply = new byte[BufferSize];
    private byte[] _read = null!, _write = null!, _getattr = null!, _flush = null!, _fsync = null!, _statfs = null!, _lookup = null!;

    private static byte[] Request(uint op, ulong node, int bodyLength, Action<Span<byte>>? fill = null)
    {
        var r = new byte[InHeaderSize + bodyLength];
        BinaryPrimitives.WriteUInt32LittleEndian(r.AsSpan(InHeader.Len), (uint)r.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(r.AsSpan(InHeader.Opcode), op);
        BinaryPrimitives.WriteUInt64LittleEndian(r.AsSpan(InHeader.Unique), 7);
        BinaryPrimitives.WriteUInt64LittleEndian(r.AsSpan(InHeader.NodeId), node);
        fill?.Invoke(r.AsSpan(InHeaderSize));
        return r;
    }

    [GlobalSetup]
    public void Setup()
    {
        _d = new FuseDispatcher([new FuseImage("disk.raw", new MemoryDevice(64 << 20))], new FuseOptions());
        var init = Request(INIT, 0, 64, b =>
        {
            BinaryPrimitives.WriteUInt32LittleEndian(b[InitIn.Major..], KernelMajor);
            BinaryPrimitives.WriteUInt32LittleEndian(b[InitIn.Minor..], OurMinor);
            BinaryPrimitives.WriteUInt32LittleEndian(b[InitIn.MaxReadahead..], 131072);
        });
        _d.Handle(init, _reply);
        const ulong node = 2; // the first image
        _read = Request(READ, node, ReadInSize, b =>
        {
            BinaryPrimitives.WriteUInt64LittleEndian(b[ReadIn.Offset..], 1 << 20);
            BinaryPrimitives.WriteUInt32LittleEndian(b[ReadIn.Size..], 4096);
        });
        _write = Request(WRITE, node, WriteInSize + 4096, b =>
        {
            BinaryPrimitives.WriteUInt64LittleEndian(b[WriteIn.Offset..], 2 << 20);
            BinaryPrimitives.WriteUInt32LittleEndian(b[WriteIn.Size..], 4096);
        });
        _getattr = Request(GETATTR, node, 16);
        _flush = Request(FLUSH, node, 24);
        _fsync = Request(FSYNC, node, FsyncInSize);
        _statfs = Request(STATFS, RootId, 0);
        _lookup = Request(LOOKUP, RootId, 9, b => "disk.raw\0"u8.CopyTo(b));
    }

    [Benchmark(Description = "READ 4K")] public int Read() => _d.Handle(_read, _reply);
    [Benchmark(Description = "WRITE 4K")] public int Write() => _d.Handle(_write, _reply);
    [Benchmark(Description = "FSYNC")] public int Fsync() => _d.Handle(_fsync, _reply);
    [Benchmark(Description = "GETATTR")] public int GetAttr() => _d.Handle(_getattr, _reply);
    [Benchmark(Description = "FLUSH")] public int Flush() => _d.Handle(_flush, _reply);
    [Benchmark(Description = "LOOKUP")] public int Lookup() => _d.Handle(_lookup, _reply);
    [Benchmark(Description = "STATFS")] public int StatFs() => _d.Handle(_statfs, _reply);
}
