// Real kernel, real tools: mount the server in-process over a sparse file and use dd, fallocate, truncate,
// losetup, mkfs.ext4, e2fsck and fio on the view.
using System.Globalization;

namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class KernelMountTests
{
    private const long Mib = 1 << 20;

    [Theory]
    [InlineData(12345L, 777, false)]
    [InlineData(999_999L, 4096, true)]
    [InlineData(3L, 65536, true)]
    [InlineData(5L * Mib - 1, 1 << 20, true)]
    public void Dd_at_odd_offsets_reads_back_through_the_view_and_lands_in_the_image(long offset, int bs, bool direct)
    {
        using var m = new TempMount(16 * Mib);
        var pattern = Kernel.Pattern(300_001, (int)offset);
        string pat = Path.Combine(m.Dir, "pattern");
        File.WriteAllBytes(pat, pattern);
        string oflag = "seek_bytes" + (direct ? ",direct" : "");
        Kernel.Ok("dd", $"if={pat}", $"of={m.View}", $"bs={bs}", $"seek={offset}", $"oflag={oflag}", "conv=notrunc,fsync", "status=none");

        string back = Path.Combine(m.Dir, "back");
        string iflag = "skip_bytes,count_bytes" + (direct ? ",direct" : "");
        Kernel.Ok("dd", $"if={m.View}", $"of={back}", $"bs={bs}", $"skip={offset}", $"count={pattern.Length}", $"iflag={iflag}", "status=none");
        Assert.Equal(pattern, File.ReadAllBytes(back));

        // The bytes are in the image file at the same offset, and nothing around them changed.
        var image = File.ReadAllBytes(m.ImagePath);
        Assert.Equal(pattern, image.AsSpan((int)offset, pattern.Length).ToArray());
        Assert.True(image.AsSpan(0, (int)offset).IndexOfAnyExcept((byte)0) < 0);
        Assert.True(image.AsSpan((int)offset + pattern.Length).IndexOfAnyExcept((byte)0) < 0);
        Assert.Equal(16 * Mib, new FileInfo(m.View).Length);
    }

    [Fact]
    public void Writes_past_the_end_fail_with_ENOSPC_and_reads_there_are_empty()
    {
        using var m = new TempMount(1 * Mib);
        string pat = Path.Combine(m.Dir, "p");
        File.WriteAllBytes(pat, Kernel.Pattern(8192, 1));
        var (rc, _, err) = Kernel.Run("dd", $"if={pat}", $"of={m.View}", "bs=4096", $"seek={Mib}", "oflag=seek_bytes,direct", "conv=notrunc", "status=none");
        Assert.NotEqual(0, rc);
        Assert.Contains("No space left", err, StringComparison.Ordinal);
        Assert.Equal(1 * Mib, new FileInfo(m.View).Length);

        using var fs = new FileStream(m.View, FileMode.Open, FileAccess.Read);
        fs.Position = Mib - 10;
        var buf = new byte[100];
        Assert.Equal(10, fs.Read(buf));
        Assert.Equal(0, fs.Read(buf));
    }

    [Fact]
    public void Punch_hole_and_zero_range_read_back_as_zeros_and_seek_data_hole_follow()
    {
        Kernel.RequireTool("fallocate", "util-linux");
        using var m = new TempMount(4 * Mib);
        string pat = Path.Combine(m.Dir, "p");
        File.WriteAllBytes(pat, Kernel.Pattern((int)(2 * Mib), 7));
        Kernel.Ok("dd", $"if={pat}", $"of={m.View}", "bs=1M", "oflag=direct", "conv=notrunc", "status=none");
        Thread.Sleep(300); // st_blocks may lag changes by up to 250 ms on an expensive device
        long blocksFull = Blocks(m.View);
        Assert.True(blocksFull >= 2 * Mib / 512, $"st_blocks {blocksFull} after writing 2 MiB");

        Kernel.Ok("fallocate", "--punch-hole", "--offset", "65536", "--length", "131072", m.View);
        Kernel.Ok("fallocate", "--zero-range", "--offset", "300001", "--length", "5000", m.View);
        Kernel.Ok("fallocate", "--zero-range", "--keep-size", "--offset", "400000", "--length", "4096", m.View);

        var data = ReadAll(m.View, direct: true);
        var expect = File.ReadAllBytes(pat).Concat(new byte[2 * Mib]).ToArray();
        expect.AsSpan(65536, 131072).Clear();
        expect.AsSpan(300001, 5000).Clear();
        expect.AsSpan(400000, 4096).Clear();
        Assert.Equal(expect, data);

        // The punched range is a hole in the image file and st_blocks went down .
        Thread.Sleep(300);
        long blocksAfter = Blocks(m.View);
        Assert.True(blocksAfter <= blocksFull - 131072 / 512, $"st_blocks {blocksFull} -> {blocksAfter}");

        using var h = File.OpenHandle(m.View, FileMode.Open, FileAccess.Read);
        int fd = (int)h.DangerousGetHandle();
        Assert.Equal(0, TestLibc.lseek(fd, 0, TestLibc.SEEK_DATA));
        Assert.Equal(65536, TestLibc.lseek(fd, 0, TestLibc.SEEK_HOLE));
        Assert.Equal(65536 + 131072, TestLibc.lseek(fd, 65536, TestLibc.SEEK_DATA));
        long hole = TestLibc.lseek(fd, 65536 + 131072, TestLibc.SEEK_HOLE);
        Assert.True(hole >= 2 * Mib - 4096 && hole <= 2 * Mib, $"hole after the data at {hole}");
        Assert.Equal(-1, TestLibc.lseek(fd, 3 * Mib, TestLibc.SEEK_DATA)); // only holes after the data
        Assert.Equal(TestLibc.ENXIO, System.Runtime.InteropServices.Marshal.GetLastPInvokeError());
        Assert.Equal(-1, TestLibc.lseek(fd, 5 * Mib, TestLibc.SEEK_HOLE)); // past the end
    }

    [Fact]
    public void Truncation_and_growth_are_refused_but_the_current_size_is_accepted()
    {
        using var m = new TempMount(8 * Mib);
        var (rc, _, err) = Kernel.Run("truncate", "-s", "1M", m.View);
        Assert.NotEqual(0, rc);
        Assert.Contains("Operation not permitted", err, StringComparison.Ordinal);
        Assert.NotEqual(0, Kernel.Run("truncate", "-s", "16M", m.View).Rc);
        Kernel.Ok("truncate", "-s", "8M", m.View);
        Assert.Throws<UnauthorizedAccessException>(() => new FileStream(m.View, FileMode.Truncate, FileAccess.Write).Dispose());
        Assert.Equal(8 * Mib, new FileInfo(m.View).Length);
        Assert.Equal(8 * Mib, new FileInfo(m.ImagePath).Length);
        // chmod/chown are accepted and remembered (libvirt chowns images).
        Kernel.Ok("chmod", "0600", m.View);
        Kernel.Ok("chown", "123:456", m.View);
        var (_, stat, _) = Kernel.Run("stat", "-c", "%a %u %g", m.View);
        Assert.Equal("600 123 456", stat.Trim());
    }

    [Fact]
    public void Read_only_mount_refuses_writes()
    {
        using var m = new TempMount(1 * Mib, new FuseOptions { ReadOnly = true });
        Assert.ThrowsAny<IOException>(() => new FileStream(m.View, FileMode.Open, FileAccess.ReadWrite).Dispose());
        Assert.Equal(Mib, ReadAll(m.View, direct: false).Length);
    }

    [Fact]
    public void Loop_device_with_direct_io_carries_an_ext4_that_fsck_accepts()
    {
        Kernel.RequireTool("losetup", "util-linux");
        Kernel.RequireTool("mkfs.ext4", "e2fsprogs");
        Kernel.RequireTool("e2fsck", "e2fsprogs");
        using var m = new TempMount(256 * Mib);
        var (rc, loopOut, loopErr) = Kernel.Run("losetup", "--direct-io=on", "--find", "--show", m.View);
        Assert.True(rc == 0, $"losetup failed: {loopErr}");
        string loop = loopOut.Trim();
        string fsDir = Path.Combine(m.Dir, "ext4");
        Directory.CreateDirectory(fsDir);
        bool mounted = false;
        try
        {
            Kernel.Ok("mkfs.ext4", "-q", "-F", loop);
            Kernel.Ok("mount", loop, fsDir);
            mounted = true;
            var files = new Dictionary<string, byte[]>();
            for (int i = 0; i < 20; i++)
            {
                var content = Kernel.Pattern(1000 + i * 37_001, i);
                files[$"f{i}"] = content;
                File.WriteAllBytes(Path.Combine(fsDir, $"f{i}"), content);
            }
            Kernel.Ok("sync", "-f", fsDir);
            Kernel.Ok("umount", fsDir);
            mounted = false;
            var fsck = Kernel.Run("e2fsck", "-fn", loop);
            Assert.True(fsck.Rc == 0, $"e2fsck -fn exited {fsck.Rc}: {fsck.Out} {fsck.Err}");

            Kernel.Ok("mount", "-o", "ro", loop, fsDir);
            mounted = true;
            foreach (var (name, content) in files) Assert.Equal(content, File.ReadAllBytes(Path.Combine(fsDir, name)));
        }
        finally
        {
            if (mounted) Kernel.Run("umount", fsDir);
            Kernel.Run("losetup", "-d", loop);
        }
        // The loop device released the file, so the view can be closed and unmounted normally.
        Kernel.WaitFor(() => Kernel.Run("losetup", "-j", m.View).Out.Trim().Length == 0, 10, "loop device detach");
    }

    [Fact]
    public void Fio_parallel_direct_writes_verify_with_crc32c()
    {
        Kernel.RequireTool("fio", "fio");
        using var m = new TempMount(128 * Mib, new FuseOptions { Threads = 4 });
        var (rc, o, e) = Kernel.RunIn(null, 150, "fio", "--name=verify", $"--filename={m.View}", "--direct=1",
            "--ioengine=libaio", "--iodepth=8", "--numjobs=4", "--size=32M", "--offset_increment=32M",
            "--rw=randwrite", "--bsrange=4k-128k", "--verify=crc32c", "--verify_fatal=1",
            "--do_verify=1", "--randrepeat=0", "--group_reporting", "--output-format=terse");
        Assert.True(rc == 0, $"fio exited {rc}\n{o}\n{e}");
        Assert.DoesNotContain("verify", e, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void Directory_listing_and_statfs()
    {
        using var m = new TempMount(4 * Mib);
        Assert.Equal(["disk.raw"], Directory.GetFileSystemEntries(m.MountPoint).Select(Path.GetFileName));
        Assert.False(File.Exists(Path.Combine(m.MountPoint, "nope.raw")));
        Assert.Throws<UnauthorizedAccessException>(() => File.WriteAllText(Path.Combine(m.MountPoint, "new.raw"), "x"));
        var (rc, df, _) = Kernel.Run("stat", "-f", "-c", "%b %S", m.MountPoint);
        Assert.Equal(0, rc);
        Assert.Equal($"{4 * Mib / 4096} 4096", df.Trim());
    }

    private static long Blocks(string path) =>
        long.Parse(Kernel.Run("stat", "-c", "%b", path).Out.Trim(), CultureInfo.InvariantCulture);

    private static byte[] ReadAll(string path, bool direct)
    {
        string tmp = Path.GetTempFileName();
        try
        {
            Kernel.Ok("dd", $"if={path}", $"of={tmp}", "bs=1M", direct ? "iflag=direct" : "iflag=fullblock", "status=none");
            return File.ReadAllBytes(tmp);
        }
        finally
        {
            File.Delete(tmp);
        }
    }
}
