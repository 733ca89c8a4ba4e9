// FUSE passthrough against the real kernel, in-process: a file device that counts the requests reaching it,
// offered for passthrough. When the kernel passes opens through, reads and writes never reach the device.
using Fvd.Core.Io;

namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class PassthroughTests : IDisposable
{
    private const int Size = 4 << 20;
    private readonly string _dir;
    private readonly string _file;
    private readonly string _mnt;
    private readonly CountingDevice _dev;
    private readonly Source _source;
    private FuseServer? _server;

    public PassthroughTests()
    {
        Kernel.Require();
        _dir = Directory.CreateTempSubdirectory("fvdfuse-pt-").FullName;
        _file = Path.Combine(_dir, "disk.data");
        _mnt = Path.Combine(_dir, "mnt");
        Directory.CreateDirectory(_mnt);
        File.WriteAllBytes(_file, Kernel.Pattern(Size, 7));
        _dev = new CountingDevice(FileDevice.Open(_file, readOnly: false));
        _source = new Source();
    }

    public void Dispose()
    {
        _server?.Dispose();
        _dev.Dispose();
        try { Directory.Delete(_dir, recursive: true); }
        catch (IOException) { }
    }

    private string View => Path.Combine(_mnt, "disk.raw");

    private void Mount(bool passthrough = true)
    {
        _server = FuseServer.Mount(_mnt, _file, [new FuseImage("disk.raw", _dev) { Passthrough = _source }],
            new FuseOptions { Passthrough = passthrough, AttrTimeout = TimeSpan.Zero, StatusDirectory = true });
    }

    private string StatusJson() => File.ReadAllText(Path.Combine(_mnt, ".fvd", "disk.json"));

    private static bool Flag(string json, string name) =>
        System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty(name).GetBoolean();

    [Fact]
    public void Reads_and_writes_go_to_the_data_file_in_the_kernel_and_fsync_still_reaches_the_device()
    {
        _source.Path = _file;
        Mount();
        Assert.True(_server!.Dispatcher.PassthroughAvailable, "the kernel did not agree to FUSE passthrough in INIT");
        Assert.True(Flag(StatusJson(), "passthrough"));

        var expect = File.ReadAllBytes(_file);
        Assert.Equal(expect, File.ReadAllBytes(View));
        var pattern = Kernel.Pattern(64 << 10, 8);
        using (var f = new FileStream(View, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 1, FileOptions.WriteThrough))
        {
            f.Position = 1 << 20;
            f.Write(pattern);
            f.Flush(flushToDisk: true);
        }
        Kernel.Ok("dd", $"if={View}", "of=/dev/null", "bs=4096", "count=16", "iflag=direct", "status=none");

        Assert.Equal(0, _dev.Reads);   // nothing came to us: the kernel read the data file itself
        Assert.Equal(0, _dev.Writes);
        Assert.True(_dev.Flushes > 0, "fsync through the view must make the data file durable via the device");
        using (var raw = File.OpenRead(_file))
        {
            var got = new byte[pattern.Length];
            raw.Position = 1 << 20;
            raw.ReadExactly(got);
            Assert.Equal(pattern, got); // the write went to the data file at the same offset
        }
        Assert.True(Flag(StatusJson(), "passthrough_active"));
    }

    [Fact]
    public void Passthrough_off_serves_every_request_itself()
    {
        _source.Path = _file;
        Mount(passthrough: false);
        Assert.False(_server!.Dispatcher.PassthroughAvailable);
        Assert.Equal(File.ReadAllBytes(_file), File.ReadAllBytes(View));
        Assert.True(_dev.Reads > 0);
        Assert.False(Flag(StatusJson(), "passthrough"));
    }

    [Fact]
    public void A_kernel_refusal_falls_back_to_serving_normally()
    {
        _source.Path = _file;
        Mount();
        _server!.Dispatcher.BackingOpen = (_, _) => -1; // what the ioctl says without CAP_SYS_ADMIN: EPERM
        Assert.Equal(File.ReadAllBytes(_file), File.ReadAllBytes(View));
        Assert.True(_dev.Reads > 0);
        Assert.False(_server.Dispatcher.PassthroughAvailable);
        Assert.False(Flag(StatusJson(), "passthrough"));
    }

    [Fact]
    public void Becoming_eligible_while_open_switches_only_once_page_cache_opens_are_released()
    {
        Mount();
        using var early = new FileStream(View, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1);
        var one = new byte[4096];
        early.ReadExactly(one);
        int readsBefore = _dev.Reads;
        Assert.True(readsBefore > 0);

        _source.Path = _file; // e.g. prefetch finished while mounted
        Assert.False(Flag(StatusJson(), "passthrough")); // a page-cache open is outstanding
        using (var second = new FileStream(View, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1))
        {
            second.Position = 2 << 20;
            second.ReadExactly(one); // opened normally (a passthrough open would fail with EIO now)
        }
        early.Dispose();

        Kernel.WaitFor(() => Flag(StatusJson(), "passthrough"), 10, "the page-cache opens to be released");
        int reads = _dev.Reads;
        Kernel.Ok("dd", $"if={View}", "of=/dev/null", "bs=65536", "skip=32", "count=16", "iflag=direct", "status=none");
        Assert.Equal(reads, _dev.Reads);
        Assert.True(Flag(StatusJson(), "passthrough_active"));
    }

    private sealed class Source : IPassthroughSource
    {
        public volatile string? Path;
        public string? PassthroughPath => Path;
    }

    private sealed class CountingDevice(IBlockDevice inner) : IBlockDevice
    {
        public int Reads, Writes, Flushes;
        public long Length => inner.Length;
        public bool IsReadOnly => inner.IsReadOnly;
        public void Read(long offset, Span<byte> buffer) { Interlocked.Increment(ref Reads); inner.Read(offset, buffer); }
        public void Write(long offset, ReadOnlySpan<byte> buffer) { Interlocked.Increment(ref Writes); inner.Write(offset, buffer); }
        public void Flush() { Interlocked.Increment(ref Flushes); inner.Flush(); }
        public void Discard(long offset, long length) => inner.Discard(offset, length);
        public void WriteZeroes(long offset, long length) => inner.WriteZeroes(offset, length);
        public Extent GetExtent(long offset, long maxLength) => inner.GetExtent(offset, maxLength);
        public void Dispose() => inner.Dispose();
    }
}
