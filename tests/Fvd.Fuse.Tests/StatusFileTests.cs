// fvdmount with FVD images over a raw template, as a user runs it: the .fvd/NAME.json status files and the
// mount options that change copy-on-read, prefetch, profile recording and passthrough.
using System.Diagnostics;
using System.Text.Json;
using Fvd.Core.Image;

namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class StatusFileTests : IDisposable
{
    private const int Size = 8 << 20;
    private readonly string _dir;
    private readonly string _base;
    private readonly string _img;
    private readonly string _mnt;
    private Process? _proc;

    public StatusFileTests()
    {
        Kernel.Require();
        _dir = Directory.CreateTempSubdirectory("fvdmount-status-").FullName;
        _base = Path.Combine(_dir, "template.raw");
        _img = Path.Combine(_dir, "vm1.fvd");
        _mnt = Path.Combine(_dir, "mnt");
        Directory.CreateDirectory(_mnt);
        File.WriteAllBytes(_base, Kernel.Pattern(Size, 11));
        FvdImage.Create(_img, new FvdCreateOptions { VirtualSize = Size, BackingFile = _base, CopyOnRead = true });
    }

    public void Dispose()
    {
        if (_proc is { HasExited: false })
        {
            TestLibc.kill(_proc.Id, TestLibc.SIGTERM);
            if (!_proc.WaitForExit(20_000)) _proc.Kill();
        }
        _proc?.Dispose();
        if (Kernel.IsMounted(_mnt)) Kernel.Run("umount", "-l", _mnt);
        try { Directory.Delete(_dir, recursive: true); }
        catch (IOException) { }
    }

    private string View => Path.Combine(_mnt, "vm1.raw");
    private string StatusFile => Path.Combine(_mnt, ".fvd", "vm1.json");

    private void Mount(string options)
    {
        var psi = new ProcessStartInfo(Kernel.FvdMountPath()) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in (string[])["-f", "-o", options, _img, _mnt]) psi.ArgumentList.Add(a);
        _proc = Process.Start(psi)!;
        Kernel.WaitFor(() => _proc.HasExited || (Kernel.IsMounted(_mnt) && File.Exists(View)), 30, "the mount");
        Assert.False(_proc.HasExited, $"fvdmount exited: {(_proc.HasExited ? _proc.StandardError.ReadToEnd() : "")}");
    }

    private string Unmount()
    {
        var err = _proc!.StandardError.ReadToEndAsync();
        Assert.Equal(0, TestLibc.kill(_proc.Id, TestLibc.SIGTERM));
        Assert.True(_proc.WaitForExit(20_000), "fvdmount did not exit");
        Assert.True(_proc.ExitCode == 0, $"exit {_proc.ExitCode}: {err.Result}");
        return err.Result;
    }

    /// <summary>Reads the status file the way a user does: `cat`, then parse.</summary>
    private JsonElement Status()
    {
        var (rc, text, err) = Kernel.Run("cat", StatusFile);
        Assert.True(rc == 0, err);
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    [Fact]
    public void Status_file_shows_backing_reads_and_copy_on_read_and_size_matches_content()
    {
        Mount("prefetch=off");
        Assert.Contains(".fvd", Directory.GetFileSystemEntries(_mnt).Select(Path.GetFileName));
        Assert.Equal(["vm1.json"], Directory.GetFiles(Path.Combine(_mnt, ".fvd")).Select(Path.GetFileName));
        var s0 = Status();
        Assert.Equal("fvd", s0.GetProperty("format").GetString());
        Assert.Equal("disabled", s0.GetProperty("prefetch").GetString());
        Assert.True(s0.GetProperty("copy_on_read").GetBoolean());
        Assert.False(s0.GetProperty("passthrough").GetBoolean()); // blocks still live in the template

        var expect = File.ReadAllBytes(_base);
        Assert.Equal(expect, File.ReadAllBytes(View));
        var s1 = Status();
        long firstPass = s1.GetProperty("backing_bytes_read").GetInt64();
        Assert.True(firstPass > 0);
        // Copy-on-read saves in the background: wait for the worker before the second pass.
        Kernel.WaitFor(() => Status().GetProperty("copy_on_read_bytes").GetInt64() >= Size, 20, "copy-on-read to save the image");
        Kernel.Ok("dd", $"if={View}", "of=/dev/null", "bs=1M", "iflag=direct", "status=none");
        var s2 = Status();
        Assert.Equal(firstPass, s2.GetProperty("backing_bytes_read").GetInt64()); // nothing more from the template
        Assert.True(s2.GetProperty("copy_on_read_bytes").GetInt64() > 0);
        Assert.Equal(s2.GetProperty("blocks_total").GetInt64(), s2.GetProperty("blocks_local").GetInt64());

        // stat's size is the size of what the next open reads (.NET reads exactly st_size bytes when it is > 0).
        string viaDotnet = File.ReadAllText(StatusFile);
        JsonDocument.Parse(viaDotnet).Dispose();
        Assert.EndsWith("}\n", viaDotnet, StringComparison.Ordinal);
        Assert.ThrowsAny<Exception>(() => File.WriteAllText(StatusFile, "{}"));
        Unmount();
    }

    [Fact]
    public void Status_file_counts_requests_per_class_over_cloned_descriptors()
    {
        Mount("prefetch=off,cor=off,threads=4,clone_fd=on");
        var s0 = Status();
        Assert.Equal("dev", s0.GetProperty("transport").GetString());
        Assert.Equal(4, s0.GetProperty("fuse_fds").GetInt32()); // one per request thread
        long w0 = s0.GetProperty("requests").GetProperty("write").GetProperty("count").GetInt64();

        var pattern = Kernel.Pattern(4 * 4096, 14);
        string pat = Path.Combine(_dir, "p");
        File.WriteAllBytes(pat, pattern);
        Kernel.Ok("dd", $"if={pat}", $"of={View}", "bs=4096", "seek=50", "oflag=direct", "conv=notrunc,fsync", "status=none");
        Assert.Equal(pattern, ReadDirect(50 * 4096, pattern.Length));

        var req = Status().GetProperty("requests");
        var write = req.GetProperty("write");
        Assert.Equal(w0 + 4, write.GetProperty("count").GetInt64()); // four O_DIRECT 4 KiB writes, one request each
        Assert.True(write.GetProperty("total_ns").GetInt64() > 0);
        Assert.True(write.GetProperty("median_ns").GetInt64() > 0);
        Assert.True(req.GetProperty("fsync").GetProperty("count").GetInt64() >= 1);
        Assert.True(req.GetProperty("read").GetProperty("count").GetInt64() >= 1);
        Assert.True(req.GetProperty("other").GetProperty("count").GetInt64() >= 1); // LOOKUP, OPEN, ...
        Unmount();
    }

    [Fact]
    public void By_default_every_thread_reads_one_shared_descriptor()
    {
        Mount("prefetch=off,cor=off,threads=4");
        Assert.Equal(1, Status().GetProperty("fuse_fds").GetInt32());
        var pattern = Kernel.Pattern(8192, 15);
        string pat = Path.Combine(_dir, "p");
        File.WriteAllBytes(pat, pattern);
        Kernel.Ok("dd", $"if={pat}", $"of={View}", "bs=4096", "seek=7", "oflag=direct", "conv=notrunc", "status=none");
        Assert.Equal(pattern, ReadDirect(7 * 4096, pattern.Length));
        Unmount();
    }

    private byte[] ReadDirect(long offset, int length)
    {
        string outFile = Path.Combine(_dir, "read.out");
        Kernel.Ok("dd", $"if={View}", $"of={outFile}", "bs=4096", $"skip={offset / 4096}", $"count={length / 4096}", "iflag=direct", "status=none");
        return File.ReadAllBytes(outFile);
    }

    [Fact]
    public void Prefetch_on_reaches_finished_and_then_opens_pass_through()
    {
        Mount("prefetch=on,prefetch_max_read=200M");
        Kernel.WaitFor(() => Status().GetProperty("prefetch").GetString() == "finished", 30, "prefetch to finish");
        var s = Status();
        Assert.True(s.GetProperty("finished").GetBoolean());
        Assert.True(s.GetProperty("prefetch_bytes").GetInt64() > 0);
        Assert.True(s.GetProperty("passthrough").GetBoolean());

        var pattern = Kernel.Pattern(8192, 12);
        string pat = Path.Combine(_dir, "p");
        File.WriteAllBytes(pat, pattern);
        Kernel.Ok("dd", $"if={pat}", $"of={View}", "bs=4096", "seek=100", "oflag=direct", "conv=notrunc,fsync", "status=none");
        Assert.True(Status().GetProperty("passthrough_active").GetBoolean());
        string data = Status().GetProperty("data_file").GetString()!;
        using (var f = File.OpenRead(data))
        {
            var got = new byte[pattern.Length];
            f.Position = 100 * 4096;
            f.ReadExactly(got);
            Assert.Equal(pattern, got);
        }
        Assert.Equal(pattern, File.ReadAllBytes(View).AsSpan(100 * 4096, pattern.Length).ToArray());
        Unmount();
    }

    [Fact]
    public void Copy_on_read_alone_reaches_finished_and_then_opens_pass_through()
    {
        Mount("prefetch=off,cor=on");
        Kernel.Ok("dd", $"if={View}", "of=/dev/null", "bs=1M", "status=none");
        Kernel.WaitFor(() => Status().GetProperty("finished").GetBoolean(), 30, "copy-on-read to finish the image");
        var s = Status();
        Assert.Equal("finished", s.GetProperty("prefetch").GetString());
        Assert.Equal(0, s.GetProperty("prefetch_bytes").GetInt64());
        Assert.False(s.GetProperty("copy_on_read").GetBoolean());
        long read = s.GetProperty("backing_bytes_read").GetInt64();
        // dd's page-cache open must be released before an open may pass through.
        Kernel.WaitFor(() => Status().GetProperty("passthrough").GetBoolean(), 10, "passthrough to become possible");
        using (var f = File.OpenRead(View))
        {
            var all = new byte[Size];
            f.ReadExactly(all);
            Assert.Equal(File.ReadAllBytes(_base), all);
            Assert.True(Status().GetProperty("passthrough_active").GetBoolean(), "an open of a finished image is passed through");
        }
        Assert.Equal(read, Status().GetProperty("backing_bytes_read").GetInt64());
        Unmount();
        using var img = FvdImage.Open(_img, new FvdOpenOptions { ReadOnly = true });
        Assert.True(img.Status.Finished); // the flag is on disk
    }

    [Fact]
    public void Cor_off_saves_nothing_and_reads_keep_coming_from_the_template()
    {
        Mount("cor=off,prefetch=off");
        Assert.Equal(File.ReadAllBytes(_base), File.ReadAllBytes(View));
        Kernel.Ok("dd", $"if={View}", "of=/dev/null", "bs=1M", "iflag=direct", "status=none");
        var s = Status();
        Assert.False(s.GetProperty("copy_on_read").GetBoolean());
        Assert.Equal(0, s.GetProperty("copy_on_read_bytes").GetInt64());
        Assert.Equal(0, s.GetProperty("blocks_local").GetInt64());
        Assert.True(s.GetProperty("backing_bytes_read").GetInt64() >= 2L * Size);
        Unmount();
    }

    [Fact]
    public void Record_profile_writes_a_read_log_that_builds_a_profile()
    {
        string log = Path.Combine(_dir, "boot.log");
        Mount($"record_profile={log},cor=off");
        Kernel.Ok("dd", $"if={View}", "of=/dev/null", "bs=64K", "skip=20", "count=2", "iflag=direct", "status=none");
        Kernel.Ok("dd", $"if={View}", "of=/dev/null", "bs=64K", "skip=3", "count=1", "iflag=direct", "status=none");
        Assert.Equal("disabled", Status().GetProperty("prefetch").GetString()); // recording keeps prefetch's reads out
        string err = Unmount();
        Assert.Contains("fvd-img profile record", err, StringComparison.Ordinal);

        var reads = File.ReadLines(log).Where(l => !l.StartsWith('#') && l.Length > 0)
            .Select(l => l.Split(' ') is [var o, var n] ? (long.Parse(o), long.Parse(n)) : throw new FormatException(l)).ToList();
        Assert.Equal([(20L * 65536, 2L * 65536), (3L * 65536, 65536L)], reads);
        using var img = FvdImage.Open(_img);
        var profile = img.BuildProfile(reads);
        Assert.Equal(reads, profile);
        img.WriteProfile(profile); // what `fvd-img profile record` does with it
        Assert.Equal(reads, img.PrefetchProfileEntries);
    }

    [Fact]
    public void Record_profile_of_the_last_sector_of_an_odd_sized_template_is_stored()
    {
        // A GPT template: 10 MiB + 512, the backup header in the last sector, inside a partial last block.
        const long tail = 10L << 20;
        string odd = Path.Combine(_dir, "gpt.raw");
        File.WriteAllBytes(odd, Kernel.Pattern((int)tail + 512, 13));
        FvdImage.Create(_img, new FvdCreateOptions { VirtualSize = 20 << 20, BackingFile = odd, BlockSize = 4096, Overwrite = true });
        string log = Path.Combine(_dir, "boot.log");
        Mount($"record_profile={log},cor=off");
        Kernel.Ok("dd", $"if={View}", "of=/dev/null", "bs=512", $"skip={tail / 512}", "count=1", "iflag=direct", "status=none");
        Unmount();

        var reads = File.ReadLines(log).Where(l => !l.StartsWith('#') && l.Length > 0)
            .Select(l => l.Split(' ') is [var o, var n] ? (long.Parse(o), long.Parse(n)) : throw new FormatException(l)).ToList();
        Assert.Equal([(tail, 512L)], reads);
        using var img = FvdImage.Open(_img);
        img.WriteProfile(img.BuildProfile(reads)); // what `fvd-img profile record` does with it
        Assert.Equal(reads, img.PrefetchProfileEntries);
    }
}
