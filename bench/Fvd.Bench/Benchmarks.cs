using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using Fvd.Core.Format;
using Fvd.Core.Image;

BenchmarkSwitcher.FromAssembly(typeof(BitmapBench).Assembly).Run(args);

/// <summary>The in-memory bitmap of a 1 TiB disk with 32 KiB blocks (32 Mi bits, 4 MiB): the lookups every request does.</summary>
[MemoryDiagnoser]
public class BitmapBench
{
    private const long Blocks = 1L << 25;
    private Bitmap _bitmap = null!;
    private long[] _probe = null!;
    private int _i;

    [GlobalSetup]
    public void Setup()
    {
        _bitmap = new Bitmap(Blocks);
        var rnd = new Random(42);
        for (int k = 0; k < 100_000; k++) _bitmap.SetRange(rnd.NextInt64(Blocks - 64), rnd.Next(1, 64));
        _probe = new long[4096];
        for (int k = 0; k < _probe.Length; k++) _probe[k] = rnd.NextInt64(Blocks - 4096);
    }

    [Benchmark(Description = "Get(random block)")]
    public bool Get() => _bitmap.Get(_probe[_i++ & 4095]);

    [Benchmark(Description = "NextWithValue over 2 blocks (a 64 KiB request)")]
    public long NextTwo() { long b = _probe[_i++ & 4095]; return _bitmap.NextWithValue(b, b + 2, false); }

    [Benchmark(Description = "NextWithValue over 4096 blocks (128 MiB)")]
    public long NextMany() { long b = _probe[_i++ & 4095]; return _bitmap.NextWithValue(b, b + 4096, false); }

    [Benchmark(Description = "SetRange(1 block)")]
    public void Set() => _bitmap.SetRange(_probe[_i++ & 4095], 1);
}

/// <summary>FvdImage read/write of 4 KiB on files in /dev/shm (tmpfs): the driver's own cost without a disk.</summary>
[MemoryDiagnoser]
public class ImageBench
{
    private const long Template = 64L << 20, Virtual = 256L << 20;
    private string _dir = null!;
    private FvdImage _img = null!;
    private readonly byte[] _buf = new byte[4096];
    private long[] _backed = null!, _local = null!;
    private int _i;

    [GlobalSetup]
    public void Setup()
    {
        _dir = Path.Combine("/dev/shm", "fvd-bench-" + Environment.ProcessId);
        Directory.CreateDirectory(_dir);
        var tpl = Path.Combine(_dir, "tpl.raw");
        var data = new byte[Template];
        new Random(1).NextBytes(data);
        File.WriteAllBytes(tpl, data);
        var path = Path.Combine(_dir, "b.fvd");
        FvdImage.Create(path, new FvdCreateOptions { VirtualSize = Virtual, BackingFile = tpl, BlockSize = 4096 });
        _img = FvdImage.Open(path);
        var rnd = new Random(2);
        _backed = new long[4096];
        _local = new long[4096];
        for (int k = 0; k < 4096; k++)
        {
            _backed[k] = rnd.NextInt64(Template / 2 / 4096) * 4096;                       // first half: left in the backing
            _local[k] = Template / 2 + rnd.NextInt64(Template / 2 / 4096) * 4096;          // second half: written below
        }
        foreach (var off in _local) _img.Write(off, _buf);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _img.Dispose();
        Directory.Delete(_dir, true);
    }

    [Benchmark(Description = "Read 4K from a block still in the backing")]
    public void ReadBacked() => _img.Read(_backed[_i++ & 4095], _buf);

    [Benchmark(Description = "Read 4K from a local block")]
    public void ReadLocal() => _img.Read(_local[_i++ & 4095], _buf);

    [Benchmark(Description = "Write 4K to a local block")]
    public void WriteLocal() => _img.Write(_local[_i++ & 4095], _buf);

    [Benchmark(Description = "Read 4K past the template end")]
    public void ReadPastEnd() => _img.Read(Template + (_local[_i++ & 4095] - Template / 2), _buf);
}
