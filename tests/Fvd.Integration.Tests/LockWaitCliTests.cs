// fvd-img and a locked image: --no-wait refuses at once even while the holder is closing the image; without
// it, the command waits for that holder and then runs.
using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Integration.Tests;

public sealed class LockWaitCliTests : IDisposable
{
    private readonly CliHarness _h = new();
    public void Dispose() => _h.Dispose();

    /// <summary>An open image whose Dispose is under way and held in its final flush until release is set.</summary>
    private Task StartClosing(string path, ManualResetEventSlim release)
    {
        var img = FvdImage.Open(path);
        using var started = new ManualResetEventSlim();
        img.WrapDataDeviceForTests(d => new RecordingDevice(d)
        {
            Before = op =>
            {
                if (op.Op != RecordedOp.Flush) return;
                started.Set();
                release.Wait();
            },
        });
        img.Write(0, new byte[] { 1 });
        var closing = Task.Run(img.Dispose);
        started.Wait();
        return closing;
    }

    [Fact]
    public async Task No_wait_refuses_an_image_that_is_closing_and_the_default_waits()
    {
        string path = _h.P("a.fvd");
        Assert.Equal(0, _h.Img("create", "-q", path, "1M").Code);
        using var release = new ManualResetEventSlim();
        var closing = StartClosing(path, release);
        try
        {
            var r = _h.Img("check", "--no-wait", path);
            Assert.Equal(1, r.Code);
            Assert.Contains("image is in use by another process (locked)", r.Err);

            // Without --no-wait the check waits; the holder finishes while it does.
            var check = Task.Run(() => _h.Img("check", path));
            release.Set();
            var ok = await check;
            Assert.True(ok.Code == 0, ok.Err);
        }
        finally
        {
            release.Set();
            await closing;
        }
    }

    [Fact]
    public void A_live_writer_is_refused_with_the_usual_message()
    {
        string path = _h.P("a.fvd");
        Assert.Equal(0, _h.Img("create", "-q", path, "1M").Code);
        using var img = FvdImage.Open(path);
        var r = _h.Img("detach", path);
        Assert.Equal(1, r.Code);
        var line = Assert.Single(r.ErrLines);
        Assert.Contains("image is in use by another process (locked) (is it mounted? stop fvdmount first)", line);
    }
}
