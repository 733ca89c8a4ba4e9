// Image locking: the data file and the backing are locked with the image, and a lock held by an image that
// is closing is waited for while a live holder is refused at once (man/fvd.5, LOCKING).
using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Core.Tests;

public sealed class LockTests : IDisposable
{
    private readonly TempDir _dir = new();
    public void Dispose() => _dir.Dispose();

    private string Base(int size = 1 << 20)
    {
        string p = _dir.File("base.raw");
        var bytes = new byte[size];
        new Random(7).NextBytes(bytes);
        File.WriteAllBytes(p, bytes);
        return p;
    }

    private string NewImage(string name = "a.fvd", string? backing = null)
    {
        string p = _dir.File(name);
        FvdImage.Create(p, new FvdCreateOptions { VirtualSize = 2 << 20, BackingFile = backing });
        return p;
    }

    /// <summary>
    /// Opens the image and makes its final flush block until release is set; returns the image and an event
    /// set once that flush has begun (so Dispose has marked the image closing).
    /// </summary>
    private static (FvdImage Img, ManualResetEventSlim FlushStarted) OpenWithGatedFlush(string path, ManualResetEventSlim release)
    {
        var img = FvdImage.Open(path);
        var started = new ManualResetEventSlim();
        img.WrapDataDeviceForTests(d => new RecordingDevice(d)
        {
            Before = op =>
            {
                if (op.Op != RecordedOp.Flush) return;
                started.Set();
                release.Wait();
            },
        });
        return (img, started);
    }

    [Fact]
    public async Task Open_waits_for_an_image_that_is_closing_and_then_sees_its_data()
    {
        string path = NewImage();
        using var release = new ManualResetEventSlim();
        var (img, flushStarted) = OpenWithGatedFlush(path, release);
        img.Write(4096, new byte[] { 1, 2, 3 });
        var closing = Task.Run(img.Dispose);
        flushStarted.Wait();

        // The holder is live but closing (Dispose marked it); the waiter is told after a second and the
        // notice lets the slow flush finish. Without the wait the open fails with "in use".
        string? notice = null;
        try
        {
            using var second = FvdImage.Open(path, new FvdOpenOptions
            {
                LockWait = new LockWait(TimeSpan.FromSeconds(60), msg => { notice = msg; release.Set(); }),
            });
            var buf = new byte[3];
            second.Read(4096, buf);
            Assert.Equal(new byte[] { 1, 2, 3 }, buf);
        }
        finally
        {
            release.Set();
            await closing;
        }
        Assert.NotNull(notice);
        Assert.Contains($"process {Environment.ProcessId}", notice);
    }

    [Fact]
    public void Open_refuses_a_live_writer_without_waiting()
    {
        string path = NewImage();
        using var first = FvdImage.Open(path);
        bool told = false;
        var e = Assert.Throws<FvdException>(() => FvdImage.Open(path, new FvdOpenOptions
        {
            LockWait = new LockWait(TimeSpan.FromSeconds(60), _ => told = true),
        }));
        Assert.Equal(FvdErrorKind.Busy, e.Kind);
        Assert.Equal("image is in use by another process (locked)", e.Message);
        Assert.False(told); // the notice comes only after a second of waiting: it never waited
    }

    [Fact]
    public async Task Open_with_no_wait_refuses_an_image_that_is_closing()
    {
        string path = NewImage();
        using var release = new ManualResetEventSlim();
        var (img, flushStarted) = OpenWithGatedFlush(path, release);
        img.Write(0, new byte[] { 9 });
        var closing = Task.Run(img.Dispose);
        try
        {
            flushStarted.Wait();
            var e = Assert.Throws<FvdException>(() => FvdImage.Open(path, new FvdOpenOptions { LockWait = LockWait.None }));
            Assert.Equal(FvdErrorKind.Busy, e.Kind);
        }
        finally
        {
            release.Set();
            await closing;
        }
    }

    [Fact]
    public async Task Check_waits_for_an_image_that_is_closing()
    {
        string path = NewImage();
        using var release = new ManualResetEventSlim();
        var (img, flushStarted) = OpenWithGatedFlush(path, release);
        img.Write(0, new byte[] { 9 });
        var closing = Task.Run(img.Dispose);
        flushStarted.Wait();
        var r = ImageChecker.Check(path, RepairMode.None, null, new LockWait(TimeSpan.FromSeconds(60), _ => release.Set()));
        release.Set();
        await closing;
        Assert.True(r.ExitCode == 0, string.Join("; ", r.Messages.Select(m => m.Text)));
    }

    [Fact]
    public void The_holder_is_found_in_proc_locks_by_device_and_inode()
    {
        string path = NewImage();
        using var img = FvdImage.Open(path);
        var id = FileIdentity.Of(path)!.Value;
        Assert.Equal([Environment.ProcessId], LockHolders.Of(id, exclusive: false));
        Assert.Equal(HolderState.Live, LockHolders.State(Environment.ProcessId));
        Assert.Empty(LockHolders.Of(FileIdentity.Of(_dir.File("a.data"))!.Value with { Inode = 1 }, exclusive: true));
    }

    [Fact]
    public void A_zombie_counts_as_exiting()
    {
        // sh forks a short sleep and execs a long one, which never reaps it: a zombie for as long as sleep runs.
        var psi = new System.Diagnostics.ProcessStartInfo("sh", ["-c", "sleep 0.2 & echo $!; exec sleep 30"]) { RedirectStandardOutput = true };
        using var sh = System.Diagnostics.Process.Start(psi)!;
        try
        {
            int zombie = int.Parse(sh.StandardOutput.ReadLine()!, System.Globalization.CultureInfo.InvariantCulture);
            var state = HolderState.Live;
            for (int i = 0; i < 200 && state == HolderState.Live; i++)
            {
                state = LockHolders.State(zombie);
                if (state == HolderState.Live) Thread.Sleep(10);
            }
            Assert.Equal(HolderState.Exiting, state);
        }
        finally
        {
            sh.Kill();
        }
    }

    [Fact]
    public void A_second_image_naming_an_open_images_data_file_is_refused()
    {
        // b.fvd is a copy of a.fvd's metadata, so its data file is a.data too: two writers of one file.
        string a = NewImage();
        File.Copy(a, _dir.File("b.fvd"));
        using var first = FvdImage.Open(a);
        var e = Assert.Throws<FvdException>(() => FvdImage.Open(_dir.File("b.fvd"), new FvdOpenOptions { LockWait = LockWait.None }));
        Assert.Equal(FvdErrorKind.Busy, e.Kind);
        Assert.Equal(_dir.File("a.data"), e.FilePath);
    }

    [Fact]
    public void Create_over_a_template_in_use_is_refused_and_leaves_it_intact()
    {
        string b = Base();
        var before = File.ReadAllBytes(b);
        using var img = FvdImage.Open(NewImage(backing: b));
        var e = Assert.Throws<FvdException>(() => FvdImage.Create(_dir.File("c.fvd"),
            new FvdCreateOptions { VirtualSize = 1 << 20, DataFile = "base.raw" }));
        Assert.Equal(FvdErrorKind.Busy, e.Kind);
        Assert.Equal(before, File.ReadAllBytes(b));
        Assert.False(File.Exists(_dir.File("c.fvd")));
    }

    [Fact]
    public void Open_refuses_an_image_whose_data_file_is_its_backing()
    {
        // A hard link defeats any comparison of names; the data file would be the template itself.
        string b = Base();
        string img = NewImage(backing: b);
        File.Delete(_dir.File("a.data"));
        Assert.Equal(0, Mono.Unix.Native.Syscall.link(b, _dir.File("a.data")));
        var before = File.ReadAllBytes(b);
        var e = Assert.Throws<FvdException>(() => FvdImage.Open(img));
        Assert.Equal(FvdErrorKind.InvalidFormat, e.Kind);
        Assert.Contains("backing file is the image's data file", e.Message);
        Assert.Equal(before, File.ReadAllBytes(b));
    }
}
