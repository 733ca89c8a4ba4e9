// fvd-img check finds data written before a crash but never flushed (its bit is still 0), reports it as a
// leak (exit 3), and -r leaks punches it out without changing what the disk reads.
using Fvd.Core.Image;
using Fvd.Core.Tests;

namespace Fvd.Integration.Tests;

public sealed class CheckLeakTests : IDisposable
{
    private readonly CliHarness _h = new();
    public void Dispose() => _h.Dispose();

    [Fact]
    public void Unflushed_data_after_a_crash_is_a_leak_that_check_r_reclaims()
    {
        var template = _h.MakeTemplate(_h.P("base.raw"), 8L << 20, [0, 1, 2, 3, 4, 5, 6, 7], []);
        Assert.Equal(0, _h.Img("create", "-q", "-b", "base.raw", "-F", "raw", "-o", "block_size=64k", _h.P("a.fvd")).Code);
        using (var img = FvdImage.Open(_h.P("a.fvd")))
        {
            var ones = new byte[256 << 10];
            Array.Fill(ones, (byte)1); // not zeros: the sparse copy below would turn zeros into holes
            img.Write(1 << 20, ones);                        // flushed: bits on disk
            img.Flush();
            img.Write(5 << 20, ones.AsSpan(0, 128 << 10));   // not flushed: data in the file, bits only in memory
            // "Crash": copy the files as they are now.
            TempDir.CopyLocked(_h.P("a.fvd"), _h.P("c.fvd"));
            TempDir.CopyLocked(_h.P("a.data"), _h.P("c.data"));
        }
        File.Move(_h.P("c.data"), _h.P("a.data"), overwrite: true);
        File.Move(_h.P("c.fvd"), _h.P("a.fvd"), overwrite: true);

        var r = _h.Img("check", "-p", _h.P("a.fvd"));
        Assert.Equal(3, r.Code);
        Assert.True(r.Out.Contains("131072 bytes allocated in the data file"), r.Out);
        Assert.Contains("(100.00/100%)", r.Out);
        long before = CliHarness.Allocated(_h.P("a.data"));

        r = _h.Img("check", "-r", "leaks", _h.P("a.fvd"));
        Assert.True(r.Code == 0, r.Out + r.Err);
        Assert.True(CliHarness.Allocated(_h.P("a.data")) <= before - (128 << 10), "the leaked range was not punched");
        using var re = FvdImage.Open(_h.P("a.fvd"), new FvdOpenOptions { ReadOnly = true });
        var all = new byte[8 << 20];
        re.Read(0, all);
        Array.Fill(template, (byte)1, 1 << 20, 256 << 10); // the flushed write; the unflushed one is lost, as it may be
        Assert.True(all.AsSpan().SequenceEqual(template));
    }

    [Fact]
    public void The_first_writable_open_after_a_crash_reclaims_leaks()
    {
        var template = _h.MakeTemplate(_h.P("base.raw"), 4L << 20, [0, 1, 2, 3], []);
        Assert.Equal(0, _h.Img("create", "-q", "-b", "base.raw", "-F", "raw", "-o", "block_size=64k", _h.P("a.fvd")).Code);
        var ones = new byte[192 << 10];
        Array.Fill(ones, (byte)7);
        using (var img = FvdImage.Open(_h.P("a.fvd")))
        {
            img.Write(2 << 20, ones); // never flushed
            TempDir.CopyLocked(_h.P("a.fvd"), _h.P("c.fvd"));
            TempDir.CopyLocked(_h.P("a.data"), _h.P("c.data"));
        }
        File.Move(_h.P("c.data"), _h.P("a.data"), overwrite: true);
        File.Move(_h.P("c.fvd"), _h.P("a.fvd"), overwrite: true);
        long leaked = CliHarness.Allocated(_h.P("a.data"));
        Assert.True(leaked >= 192 << 10);

        using (var re = FvdImage.Open(_h.P("a.fvd")))
        {
            Assert.True(re.WasUnclean);
            var all = new byte[4 << 20];
            re.Read(0, all);
            Assert.True(all.AsSpan().SequenceEqual(template)); // the unflushed write is gone, as it may be
        }
        Assert.True(CliHarness.Allocated(_h.P("a.data")) <= leaked - (192 << 10), "recovery did not punch the leak");
        var r = _h.Img("check", _h.P("a.fvd"));
        Assert.True(r.Code == 0, r.Out + r.Err);
    }
}
