// Issue 3 through the real kernel and the real fvdmount binary, over FVD images whose backing is a raw template
// with random data and whose virtual size exceeds the template (min-size): dd at odd offsets, ext4 on a
// direct-io loop device across a remount, qemu-io/qemu-img, kill -9 mid-workload, fio verify, fsx, and
// concurrent sub-block writes into uncopied template blocks.
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Xunit.Abstractions;

namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class FvdImageKernelTests(ITestOutputHelper output)
{
    private const long Mib = FvdRig.Mib;
    private const long TemplateSize = 48 * Mib;
    private const long VirtualSize = 96 * Mib;

    [Fact]
    public void Dd_at_odd_offsets_buffered_and_direct_lands_over_the_template_and_the_image_closes_clean()
    {
        using var rig = new FvdRig(TemplateSize, VirtualSize, seed: 11);
        long t = TemplateSize;
        // (offset, length, bs, direct): inside the template, straddling its end, past it, the disk's last bytes,
        // and overlaps of earlier writes. O_DIRECT needs 512-aligned offsets and lengths, never 4 KiB-aligned here.
        (long Off, int Len, int Bs, bool Direct)[] writes =
        [
            (1_234_567, 100_001, 4096, false),
            (512 * 7777, 512 * 3 * 41, 512 * 3, true),
            (t - 3000, 10_000, 1000, false),
            (t - 512 * 5, 512 * 20, 512 * 4, true),
            (t + 5_000_001, 70_000, 65536, false),
            (t + 512 * 999, 65536 * 3, 65536, true),
            (VirtualSize - 777, 777, 777, false),
            (VirtualSize - 512 * 9, 512 * 9, 512 * 3, true),
            (1_234_567 + 50_000, 3, 1, false),             // overlaps the first write
            (512 * 7777 + 512 * 11, 512 * 2, 512, true),   // overlaps the second
        ];
        var expected = rig.InitialContent();
        rig.Mount();
        Assert.Equal(VirtualSize, new FileInfo(rig.View).Length);
        for (int i = 0; i < writes.Length; i++)
        {
            var (off, len, bs, direct) = writes[i];
            var pattern = Kernel.Pattern(len, 1000 + i);
            string pat = Path.Combine(rig.Dir, "pattern");
            File.WriteAllBytes(pat, pattern);
            Kernel.Ok("dd", $"if={pat}", $"of={rig.View}", $"bs={bs}", $"seek={off}",
                "oflag=seek_bytes" + (direct ? ",direct" : ""), "conv=notrunc" + (i % 2 == 0 ? ",fsync" : ""), "status=none");
            pattern.CopyTo(expected, off);
            // Read back right away through the view, both ways.
            FvdRig.SameBytes(pattern, rig.ReadView(off, len, direct: true), $"write {i} read back with O_DIRECT");
            FvdRig.SameBytes(pattern, rig.ReadView(off, len, direct: false), $"write {i} read back buffered");
        }
        // The whole view: template overlaid with the writes, zeros past the template.
        FvdRig.SameBytes(expected, rig.ReadView(0, VirtualSize), "the whole view");
        Assert.False(rig.IsClean, "the image is marked clean while mounted for writing");

        rig.Unmount();
        Assert.True(rig.IsClean, "the image is not marked clean after unmount");
        var lib = rig.ReadWithLibrary(out bool unclean);
        Assert.False(unclean);
        FvdRig.SameBytes(expected, lib, "the image read with the library after unmount");
        Assert.Equal(rig.TemplateHash, FvdRig.HashFile(rig.Template));
    }
    [Fact]
    public void Ext4_on_a_direct_io_loop_fscks_clean_and_survives_an_fvdmount_remount_byte_for_byte()
    {
        Kernel.RequireTool("losetup", "util-linux");
        Kernel.RequireTool("mkfs.ext4", "e2fsprogs");
        Kernel.RequireTool("e2fsck", "e2fsprogs");
        using var rig = new FvdRig(TemplateSize, VirtualSize, seed: 12);
        rig.Mount();
        string loop = rig.AttachLoop();
        Kernel.Ok("mkfs.ext4", "-q", "-F", loop); // discards the device: punch-holes through the view
        Kernel.Ok("mount", loop, rig.FsDir);
        var files = new Dictionary<string, byte[]>();
        var rnd = new Random(5);
        Directory.CreateDirectory(Path.Combine(rig.FsDir, "d"));
        for (int i = 0; i < 24; i++)
        {
            string name = Path.Combine(i % 3 == 0 ? "d" : "", $"f{i}");
            var data = Kernel.Pattern(rnd.Next(1, 3 << 20), 200 + i);
            File.WriteAllBytes(Path.Combine(rig.FsDir, name), data);
            files[name] = System.Security.Cryptography.SHA256.HashData(data);
        }
        foreach (var name in files.Keys.Where((_, i) => i % 4 == 1).ToList())
        {
            File.Delete(Path.Combine(rig.FsDir, name));
            files.Remove(name);
        }
        Kernel.Ok("sync", "-f", rig.FsDir);
        Kernel.Ok("umount", rig.FsDir);
        var fsck = Kernel.Run("e2fsck", "-fn", loop);
        Assert.True(fsck.Rc == 0, $"e2fsck -fn exited {fsck.Rc}: {fsck.Out} {fsck.Err}");
        rig.DetachLoop(loop);
        string before = FvdRig.HashFile(rig.View);

        rig.Unmount();
        Assert.True(rig.IsClean);
        rig.AssertCheckClean();
        rig.Mount();
        Assert.Equal(before, FvdRig.HashFile(rig.View));

        loop = rig.AttachLoop();
        Kernel.Ok("mount", loop, rig.FsDir);
        foreach (var (name, hash) in files)
            Assert.True(hash.AsSpan().SequenceEqual(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(Path.Combine(rig.FsDir, name)))), $"{name} differs after the remount");
        var present = Directory.GetFiles(rig.FsDir, "f*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(rig.FsDir, f)).Order().ToArray();
        Assert.Equal(files.Keys.Order().ToArray(), present);
        Kernel.Ok("umount", rig.FsDir);
        fsck = Kernel.Run("e2fsck", "-fn", loop);
        Assert.True(fsck.Rc == 0, $"e2fsck -fn after the remount exited {fsck.Rc}: {fsck.Out} {fsck.Err}");
        rig.DetachLoop(loop);
        rig.Unmount();
        Assert.Equal(rig.TemplateHash, FvdRig.HashFile(rig.Template));
    }

    [Fact]
    public void Qemu_io_pattern_write_read_discard_and_qemu_img_map_shows_the_discarded_ranges_as_zero()
    {
        Kernel.RequireTool("qemu-io", "qemu-utils");
        Kernel.RequireTool("qemu-img", "qemu-utils");
        using var rig = new FvdRig(TemplateSize, VirtualSize, blockSize: 65536, seed: 13);
        long t = TemplateSize;
        long w1 = Mib + 4096, w1Len = 192 << 10;     // inside the template, not block-aligned
        long w2 = t - 65536 + 512, w2Len = 128 << 10; // straddles the template's end
        long d1 = 8 * Mib, d1Len = Mib;               // discard inside the template (uncopied blocks)
        long d2 = t + 2 * Mib, d2Len = Mib;           // discard past the template, after a write there
        rig.Mount();
        var (rc, o, e) = Kernel.RunIn(null, 60, "qemu-io", "-f", "raw", "-t", "none",
            "-c", $"write -P 0x5a {w1} {w1Len}", "-c", $"read -P 0x5a {w1} {w1Len}",
            "-c", $"write -P 0xa5 {w2} {w2Len}", "-c", $"read -P 0xa5 {w2} {w2Len}",
            "-c", $"write -P 0x33 {d2} {d2Len}", "-c", $"read -P 0x33 {d2} {d2Len}",
            "-c", $"discard {d1} {d1Len}", "-c", $"read -P 0 {d1} {d1Len}",
            "-c", $"discard {d2} {d2Len}", "-c", $"read -P 0 {d2} {d2Len}",
            "-c", $"read -P 0x5a {w1} {w1Len}", rig.View);
        Assert.True(rc == 0, $"qemu-io exited {rc}\n{o}\n{e}");
        Assert.DoesNotContain("fail", o + e, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(11, System.Text.RegularExpressions.Regex.Matches(o, @"^(wrote|read|discard) ", System.Text.RegularExpressions.RegexOptions.Multiline).Count);

        (rc, o, e) = Kernel.RunIn(null, 60, "qemu-img", "map", "-f", "raw", "--output=json", rig.View);
        Assert.True(rc == 0, $"qemu-img map exited {rc}\n{o}\n{e}");
        var map = JsonDocument.Parse(o).RootElement.EnumerateArray()
            .Select(x => (Start: x.GetProperty("start").GetInt64(), Length: x.GetProperty("length").GetInt64(),
                Zero: x.GetProperty("zero").GetBoolean(), Data: x.GetProperty("data").GetBoolean())).ToList();
        Assert.Equal(VirtualSize, map.Sum(x => x.Length));
        void Covered(long off, long len, bool zero, string what)
        {
            foreach (var x in map.Where(x => x.Start < off + len && x.Start + x.Length > off))
                Assert.True(x.Zero == zero && x.Data == !zero, $"{what} [{off}, +{len}) overlaps map entry {x}\n{o}");
        }
        Covered(d1, d1Len, zero: true, "discarded range inside the template");
        Covered(d2, d2Len, zero: true, "discarded range past the template");
        Covered(w1, w1Len, zero: false, "written range");
        Covered(w2, w2Len, zero: false, "range straddling the template end");
        Covered(0, Mib, zero: false, "template data");

        rig.Unmount();
        var expected = rig.InitialContent();
        expected.AsSpan((int)w1, (int)w1Len).Fill(0x5a);
        expected.AsSpan((int)w2, (int)w2Len).Fill(0xa5);
        expected.AsSpan((int)d1, (int)d1Len).Clear();
        expected.AsSpan((int)d2, (int)d2Len).Clear();
        FvdRig.SameBytes(expected, rig.ReadWithLibrary(out _), "the image after qemu-io");
        rig.AssertCheckClean();
        Assert.Equal(rig.TemplateHash, FvdRig.HashFile(rig.Template));
    }

    [Theory]
    [InlineData(14)]
    [InlineData(24)]
    [InlineData(34)]
    public async Task Kill_9_during_fsyncing_writes_loses_no_fsynced_chunk_and_the_image_reopens_unclean(int seed)
    {
        using var rig = new FvdRig(TemplateSize, VirtualSize, seed: seed);
        const int Chunk = (256 << 10) + 512, Count = 80;
        const long Base = 4 * Mib + 512 * 3, Stride = Mib + 512 * 7; // crosses the template's end at chunk ~44
        const long Noise = 4 * Mib; // [0, Noise): unsynced buffered sub-block writes over the template, ignored
        string pat = Path.Combine(rig.Dir, "chunks");
        File.WriteAllBytes(pat, Kernel.Pattern(Chunk * Count, seed + 77));
        var chunks = File.ReadAllBytes(pat);
        string log = Path.Combine(rig.Dir, "fsynced.log");
        string script = Path.Combine(rig.Dir, "writer.sh");
        // Odd chunks O_DIRECT, even ones buffered; each dd ends with fsync before the chunk is logged.
        File.WriteAllText(script, $$"""
            for ((i=0; i<{{Count}}; i++)); do
              fl=seek_bytes; if (( i % 2 )); then fl=seek_bytes,direct; fi
              dd if={{pat}} of={{rig.View}} bs={{Chunk}} skip=$i seek=$(({{Base}} + i*{{Stride}})) count=1 oflag=$fl conv=notrunc,fsync status=none || exit 0
              echo $i >> {{log}}
            done
            """);
        rig.Mount();
        // Background noise so that the daemon is busy (read-merge-writes, dirty bitmap bits) when it dies;
        // O_DIRECT, so the chunks' fsyncs need not write back its pages.
        using var noise = Process.Start(new ProcessStartInfo("fio", ["--name=noise", $"--filename={rig.View}", "--direct=1",
            "--ioengine=libaio", "--iodepth=4", "--rw=randwrite", "--bsrange=512-16k", "--blockalign=512", "--size=" + Noise, "--time_based", "--runtime=120",
            "--output=/dev/null"]) { RedirectStandardError = true, RedirectStandardOutput = true })!;
        var clock = Stopwatch.StartNew();
        using var writer = Process.Start(new ProcessStartInfo("bash", [script]) { RedirectStandardError = true, RedirectStandardOutput = true })!;
        var writerErr = writer.StandardError.ReadToEndAsync();
        Kernel.WaitFor(() => File.Exists(log) && File.ReadAllLines(log).Length >= 20 || writer.HasExited, 60, "20 fsync'ed chunks");
        Assert.False(writer.HasExited, "the writer finished before the kill");
        output.WriteLine($"kill -9 at {clock.Elapsed.TotalSeconds:F1} s");
        rig.Kill9();
        output.WriteLine($"dead mount detached at {clock.Elapsed.TotalSeconds:F1} s");
        Assert.True(writer.WaitForExit(30_000), "the writer did not stop after the kill");
        noise.Kill(); // it would fail with ENOTCONN anyway; only its load at the kill matters
        noise.WaitForExit();
        var done = File.ReadAllLines(log).Select(int.Parse).ToList();
        Assert.True(done.Count >= 20 && done.Count < Count, $"{done.Count} chunks logged");
        Assert.Equal(Enumerable.Range(0, done.Count), done);
        int inFlight = done.Count; // may or may not have reached the image
        output.WriteLine($"writer and noise gone at {clock.Elapsed.TotalSeconds:F1} s");
        output.WriteLine($"{done.Count} chunks fsync'ed before kill -9; writer stderr: {(await writerErr).Trim()}");

        var expected = rig.InitialContent();
        for (int i = 0; i < done.Count; i++) chunks.AsSpan(i * Chunk, Chunk).CopyTo(expected.AsSpan((int)(Base + i * Stride)));
        Assert.False(rig.IsClean, "the image is marked clean after kill -9");
        var lib = rig.ReadWithLibrary(out bool unclean);
        Assert.True(unclean, "FvdImage.Open did not report WasUnclean");
        lib.AsSpan(0, (int)Noise).CopyTo(expected); // whatever the noise left must read the same after the remount
        // The in-flight chunk may have landed (wholly or partly): compare it separately.
        long fo = Base + inFlight * Stride;
        var flight = lib.AsSpan((int)fo, Chunk).ToArray();
        lib.AsSpan((int)fo, Chunk).CopyTo(expected.AsSpan((int)fo));
        FvdRig.SameBytes(expected, lib, "the image after kill -9 (library)");
        var initial = rig.InitialContent();
        for (int s = 0; s < Chunk; s += 512)
        {
            var got = flight.AsSpan(s, 512);
            Assert.True(got.SequenceEqual(chunks.AsSpan(inFlight * Chunk + s, 512)) || got.SequenceEqual(initial.AsSpan((int)fo + s, 512)),
                $"in-flight chunk sector {s / 512} is neither old nor new");
        }

        rig.Mount();
        output.WriteLine($"remounted at {clock.Elapsed.TotalSeconds:F1} s");
        FvdRig.SameBytes(expected, rig.ReadView(0, VirtualSize), "the view after kill -9 and remount");
        rig.Unmount();
        Assert.True(rig.IsClean);
        rig.AssertCheckClean();
        Assert.Equal(rig.TemplateHash, FvdRig.HashFile(rig.Template));
    }

    [Fact]
    public void Kill_9_under_ext4_keeps_synced_and_fsynced_files_and_fsck_is_clean_after_journal_replay()
    {
        Kernel.RequireTool("losetup", "util-linux");
        Kernel.RequireTool("mkfs.ext4", "e2fsprogs");
        using var rig = new FvdRig(TemplateSize, VirtualSize, seed: 15);
        rig.Mount();
        string loop = rig.AttachLoop();
        Kernel.Ok("mkfs.ext4", "-q", "-F", loop);
        Kernel.Ok("mount", loop, rig.FsDir);
        var synced = new Dictionary<string, byte[]>();
        for (int i = 0; i < 10; i++)
        {
            var data = Kernel.Pattern(300_000 + i * 1000, 300 + i);
            File.WriteAllBytes(Path.Combine(rig.FsDir, $"s{i}"), data);
            synced[$"s{i}"] = data;
        }
        Kernel.Ok("sync", "-f", rig.FsDir);
        // Unsynced work in flight when the daemon dies, and a writer that logs each file after its fsync.
        for (int i = 0; i < 10; i++) File.WriteAllBytes(Path.Combine(rig.FsDir, $"u{i}"), Kernel.Pattern(200_000, 400 + i));
        const int FileLen = 131072 + 4608, Files = 200;
        string pat = Path.Combine(rig.Dir, "files");
        var pattern = Kernel.Pattern(FileLen * Files, 500);
        File.WriteAllBytes(pat, pattern);
        string log = Path.Combine(rig.Dir, "fsynced.log");
        string script = Path.Combine(rig.Dir, "writer.sh");
        File.WriteAllText(script, $$"""
            for ((i=0; i<{{Files}}; i++)); do
              dd if={{pat}} of={{rig.FsDir}}/w$i bs={{FileLen}} skip=$i count=1 conv=fsync status=none || exit 0
              echo $i >> {{log}}
            done
            """);
        using (var writer = Process.Start(new ProcessStartInfo("bash", [script]) { RedirectStandardError = true, RedirectStandardOutput = true })!)
        {
            Kernel.WaitFor(() => File.Exists(log) && File.ReadAllLines(log).Length >= 15 || writer.HasExited, 60, "15 fsync'ed files");
            Assert.False(writer.HasExited, "the writer finished before the kill");
            rig.Kill9();
            if (!writer.WaitForExit(20_000)) writer.Kill(entireProcessTree: true);
            writer.WaitForExit();
        }
        var done = File.ReadAllLines(log).Select(int.Parse).ToList();
        output.WriteLine($"{done.Count} files fsync'ed on the ext4 before kill -9");
        foreach (int i in done) synced[$"w{i}"] = pattern.AsSpan(i * FileLen, FileLen).ToArray();
        Kernel.Run("umount", rig.FsDir); // fails or succeeds with I/O errors: the device is gone
        if (Kernel.IsMounted(rig.FsDir)) Kernel.Ok("umount", "-l", rig.FsDir);
        rig.DetachLoop(loop);

        Assert.False(rig.IsClean);
        rig.Mount();
        loop = rig.AttachLoop();
        Kernel.Ok("mount", loop, rig.FsDir); // replays the journal
        foreach (var (name, data) in synced)
            FvdRig.SameBytes(data, File.ReadAllBytes(Path.Combine(rig.FsDir, name)), $"synced file {name}");
        Kernel.Ok("umount", rig.FsDir);
        var fsck = Kernel.Run("e2fsck", "-fn", loop);
        Assert.True(fsck.Rc == 0, $"e2fsck -fn after kill -9 and journal replay exited {fsck.Rc}: {fsck.Out} {fsck.Err}");
        rig.DetachLoop(loop);
        rig.Unmount();
        rig.AssertCheckClean();
    }

    [Fact]
    public void Fio_crc32c_verify_4_jobs_libaio_direct_randwrite_then_a_separate_verify_pass_after_remount()
    {
        Kernel.RequireTool("fio", "fio");
        using var rig = new FvdRig(TemplateSize, VirtualSize, seed: 16);
        // 4 jobs x 16 MiB from 8 MiB: the third straddles the template's end, the fourth is past it.
        string[] job = ["--name=verify", $"--filename={rig.View}", "--direct=1", "--ioengine=libaio", "--iodepth=8",
            "--numjobs=4", "--offset=8M", "--size=16M", "--offset_increment=16M", "--rw=randwrite", "--bsrange=4k-64k",
            "--verify=crc32c", "--verify_fatal=1", "--randrepeat=1", "--randseed=1234", "--group_reporting"];
        rig.Mount();
        var (rc, o, e) = Kernel.RunIn(null, 150, "fio", [.. job, "--do_verify=1"]);
        output.WriteLine($"fio write+verify pass:\n{o}");
        Assert.True(rc == 0, $"fio write pass exited {rc}\n{o}\n{e}");
        Assert.Contains("err= 0", o, StringComparison.Ordinal);
        rig.Unmount();
        rig.AssertCheckClean();

        rig.Mount();
        (rc, o, e) = Kernel.RunIn(null, 150, "fio", [.. job, "--verify_only"]);
        output.WriteLine($"fio verify-only pass:\n{o}");
        Assert.True(rc == 0, $"fio verify pass exited {rc}\n{o}\n{e}");
        Assert.Contains("err= 0", o, StringComparison.Ordinal);
        Assert.DoesNotContain("verify:", e, StringComparison.OrdinalIgnoreCase);
        rig.Unmount();
        // Outside the jobs' ranges nothing changed.
        var lib = rig.ReadWithLibrary(out _);
        var initial = rig.InitialContent();
        FvdRig.SameBytes(initial.AsSpan(0, (int)(8 * Mib)), lib.AsSpan(0, (int)(8 * Mib)), "before the jobs' ranges");
        FvdRig.SameBytes(initial.AsSpan((int)(72 * Mib)), lib.AsSpan((int)(72 * Mib)), "after the jobs' ranges");
    }

    [Theory]
    [InlineData(false, false, 101)]
    [InlineData(true, true, 102)] // O_DIRECT reads reach the daemon, so copy-on-read runs under the writes
    public void Fsx_20000_ops_on_the_view(bool direct, bool copyOnRead, int seed)
    {
        using var rig = new FvdRig(TemplateSize, VirtualSize, blockSize: 16384, copyOnRead: copyOnRead, seed: 17);
        rig.Mount();
        string dll = FvdRig.BuiltTool("Fvd.Reliability", "fvd-reliability.dll");
        var sw = Stopwatch.StartNew();
        var (rc, o, e) = Kernel.RunIn(null, 150, "dotnet", [dll, "fsx", "--path", rig.View, "--ops", "20000",
            "--seed", seed.ToString(CultureInfo.InvariantCulture), .. (direct ? new[] { "--direct" } : [])]);
        output.WriteLine($"fsx ({sw.Elapsed.TotalSeconds:F1} s):\n{o}\n{e}");
        Assert.True(rc == 0, $"fsx exited {rc} after {sw.Elapsed}\n{o}\n{e}\nfvdmount: {rig.DaemonStderr}");
        Assert.Contains("0 failed", o, StringComparison.Ordinal);
        rig.Unmount();
        rig.AssertCheckClean();
        Assert.Equal(rig.TemplateHash, FvdRig.HashFile(rig.Template));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)] // with readers: copy-on-read copies race with the writes and must not undo them
    public void Concurrent_processes_writing_distinct_sectors_of_the_same_uncopied_blocks_lose_no_update(bool copyOnRead)
    {
        Kernel.RequireTool("fio", "fio");
        const int Jobs = 7; // sector 7 of every 4 KiB stays the template's: the read-merge-write must keep it
        using var rig = new FvdRig(TemplateSize, VirtualSize, blockSize: 65536, copyOnRead: copyOnRead, seed: 18);
        (long Off, long Len)[] regions = [(4 * Mib, 4 * Mib), (TemplateSize - 2 * Mib, 4 * Mib)];
        rig.Mount("-o", "threads=8");
        var expected = rig.InitialContent();
        foreach (var (off, len) in regions)
        {
            var args = new List<string> { $"--filename={rig.View}", "--direct=1", "--ioengine=libaio", "--iodepth=4",
                "--bs=512", $"--rw=write:{4096 - 512}", $"--size={len}" };
            for (int k = 0; k < Jobs; k++)
            {
                args.AddRange([$"--name=j{k}", $"--offset={off + k * 512}", $"--buffer_pattern=0x{0xA0 + k:x2}"]);
                for (long s = off + k * 512; s < off + len; s += 4096) expected.AsSpan((int)s, 512).Fill((byte)(0xA0 + k));
            }
            if (copyOnRead)
                for (int r = 0; r < 2; r++)
                    args.AddRange([$"--name=r{r}", $"--offset={off}", "--rw=randread", "--bs=4k", "--iodepth=8", $"--randseed={r + 1}"]);
            var (rc, o, e) = Kernel.RunIn(null, 150, "fio", [.. args]);
            output.WriteLine($"region {off}: fio\n{o}");
            Assert.True(rc == 0, $"fio exited {rc}\n{o}\n{e}");
            FvdRig.SameBytes(expected.AsSpan((int)off, (int)len), rig.ReadView(off, len), $"region {off} through the view");
        }
        rig.Unmount();
        FvdRig.SameBytes(expected, rig.ReadWithLibrary(out _), "the image after concurrent sub-block writes");
        rig.AssertCheckClean();
    }
}
