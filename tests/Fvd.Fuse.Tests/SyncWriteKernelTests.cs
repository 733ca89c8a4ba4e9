// Real kernel: a write flagged O_DSYNC/O_SYNC (open flag) or RWF_DSYNC (pwritev2) on a direct-I/O open reaches
// the daemon without any FSYNC after it; the device must have been flushed before the write returns.
using System.Globalization;

namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class SyncWriteKernelTests
{
    private const int Size = 16 << 20;

    private sealed class Mounted : IDisposable
    {
        public string Dir { get; } = Directory.CreateTempSubdirectory("fvdfuse-sync-").FullName;
        public TestDevice Device { get; } = new(Size);
        public FuseServer Server { get; }
        public string View => Path.Combine(Dir, "mnt", "disk.raw");

        public Mounted(FuseOptions options)
        {
            Kernel.Require();
            Directory.CreateDirectory(Path.Combine(Dir, "mnt"));
            Server = FuseServer.Mount(Path.Combine(Dir, "mnt"), "sync-test", [new FuseImage("disk.raw", Device)], options);
        }

        public void Dispose()
        {
            Server.Dispose();
            Directory.Delete(Dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("direct,dsync", false)]
    [InlineData("direct,sync", false)]
    [InlineData("dsync", true)] // every open direct (-o direct_io)
    public void Dd_sync_writes_through_direct_io_flush_the_device_before_returning(string oflag, bool directIoMount)
    {
        using var m = new Mounted(new FuseOptions { DirectIo = directIoMount });
        string src = Path.Combine(m.Dir, "src");
        File.WriteAllBytes(src, Kernel.Pattern(20 * 4096, 3));
        Kernel.Ok("dd", $"if={src}", $"of={m.View}", "bs=4096", "count=20", $"oflag={oflag}", "conv=notrunc", "status=none");
        Assert.Equal(20, m.Device.Writes);
        // One flush per write, each after its write: nothing acknowledged was left volatile.
        Assert.True(m.Device.Flushes >= 20, $"{m.Device.Flushes} flushes for 20 synchronous writes");
        Assert.Equal(20, m.Device.WritesAtLastFlush);
        Assert.Equal(File.ReadAllBytes(src), m.Device.Bytes.AsSpan(0, 20 * 4096).ToArray());
    }

    [Fact]
    public void Pwritev2_RWF_DSYNC_on_an_O_DIRECT_open_flushes_the_device()
    {
        Kernel.RequireTool("python3", "python3");
        using var m = new Mounted(new FuseOptions());
        // An aligned buffer (mmap) for O_DIRECT; 3 plain writes, then 2 with RWF_DSYNC.
        string script = string.Create(CultureInfo.InvariantCulture, $$"""
            import mmap, os
            fd = os.open("{{m.View}}", os.O_RDWR | os.O_DIRECT)
            buf = mmap.mmap(-1, 4096); buf.write(b"x" * 4096)
            for i in range(3): os.pwritev(fd, [buf], i * 4096)
            for i in range(3, 5): os.pwritev(fd, [buf], i * 4096, os.RWF_DSYNC)
            os.close(fd)
            """);
        Kernel.Ok("python3", "-c", script);
        Assert.Equal(5, m.Device.Writes);
        Assert.Equal(2, m.Device.Flushes); // only the flagged writes, and no FSYNC at close
        Assert.Equal(5, m.Device.WritesAtLastFlush);
    }
}
