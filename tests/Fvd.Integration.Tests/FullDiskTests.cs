// A full host file system: the writer gets a clear NoSpace error, nothing acknowledged is lost, and the
// tool exits non-zero with one line. Uses a 4 MiB tmpfs (tests run as root).
using System.Diagnostics;
using Fvd.Core;
using Fvd.Core.Image;

namespace Fvd.Integration.Tests;

public sealed class FullDiskTests : IDisposable
{
    private readonly CliHarness _h = new();
    private readonly string _mnt;

    public FullDiskTests()
    {
        _mnt = _h.P("small");
        Directory.CreateDirectory(_mnt);
        Run("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", _mnt);
    }

    public void Dispose()
    {
        Run("umount", "-l", _mnt);
        _h.Dispose();
    }

    private static void Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{file}: {err}");
    }

    [Fact]
    public void Writes_past_the_host_capacity_fail_with_NoSpace_and_earlier_flushed_writes_survive()
    {
        string img = Path.Combine(_mnt, "a.fvd");
        FvdImage.Create(img, new FvdCreateOptions { VirtualSize = 64 << 20 });
        var chunk = new byte[1 << 20];
        new Random(1).NextBytes(chunk);
        int written = 0;
        FvdException? error = null;
        using (var fvd = FvdImage.Open(img))
        {
            for (int i = 0; i < 64; i++)
            {
                try
                {
                    fvd.Write((long)i << 20, chunk);
                    fvd.Flush();
                    written++;
                }
                catch (FvdException e)
                {
                    error = e;
                    break;
                }
            }
            Assert.NotNull(error);
            Assert.Equal(FvdErrorKind.NoSpace, error!.Kind);
            Assert.DoesNotContain('\n', error.OneLine);
            // Free some space so the clean close (header rewrite, in place) has what it needs.
            fvd.Discard(0, 1 << 20);
            fvd.Flush();
        }
        Assert.InRange(written, 1, 4);
        using var re = FvdImage.Open(img, new FvdOpenOptions { ReadOnly = true });
        var buf = new byte[1 << 20];
        for (int i = 1; i < written; i++)
        {
            re.Read((long)i << 20, buf);
            Assert.True(buf.AsSpan().SequenceEqual(chunk), $"flushed MiB {i} lost");
        }
    }

    [Fact]
    public void Create_that_runs_out_of_space_leaves_no_half_made_files()
    {
        // Fill the file system, then ask for an image whose bitmap cannot be written.
        File.WriteAllBytes(Path.Combine(_mnt, "filler"), new byte[(4 << 20) - 8192]);
        var tpl = _h.P("big.raw");
        using (var f = File.Create(tpl)) f.SetLength(256L << 30); // sparse 256 GiB: a 2 MiB bitmap
        var e = Assert.Throws<Fvd.Core.FvdException>(() => FvdImage.Create(Path.Combine(_mnt, "x.fvd"),
            new FvdCreateOptions { VirtualSize = 256L << 30, BackingFile = tpl, ZeroAware = false, BlockSize = 16384 }));
        Assert.Equal(FvdErrorKind.NoSpace, e.Kind);
        Assert.False(File.Exists(Path.Combine(_mnt, "x.fvd")));
        Assert.False(File.Exists(Path.Combine(_mnt, "x.data")));
    }

    [Fact]
    public void Convert_to_a_full_file_system_exits_1_with_one_line()
    {
        var src = _h.P("src.raw");
        var data = new byte[8 << 20];
        new Random(2).NextBytes(data);
        File.WriteAllBytes(src, data);
        var r = _h.Img("convert", "-O", "fvd", src, Path.Combine(_mnt, "out.fvd"));
        Assert.Equal(1, r.Code);
        Assert.Single(r.ErrLines);
        Assert.Contains("No space left", r.Err);
    }
}
