// -o partitions through the real kernel: a GPT made through the view with sfdisk, each NAME-pN.raw formatted
// (ext4, vfat), loop-mounted and written, fsck clean, every byte outside the partitions unchanged (checked on the
// whole disk), and the files following a table change made through NAME.raw while mounted.
using System.Text;

namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class PartitionKernelTests
{
    private const long Mib = FvdRig.Mib;
    private const long S = 512;

    [Fact]
    public void Gpt_partitions_made_with_sfdisk_are_files_that_mkfs_mount_and_fsck_and_follow_the_table()
    {
        Kernel.RequireTool("sfdisk", "fdisk");
        Kernel.RequireTool("mkfs.vfat", "dosfstools");
        using var rig = new FvdRig(8 * Mib, 96 * Mib, seed: 21);
        rig.Mount("-o", "partitions");
        // 24 MiB ext4, 16 MiB vfat, 24 MiB ext4, with 1 MiB gaps that must keep the template's bytes.
        (long Start, long Sectors, string Fs)[] parts = [(2048, 49152, "ext4"), (53248, 32768, "vfat"), (88064, 49152, "ext4")];
        string script = Path.Combine(rig.Dir, "table");
        File.WriteAllText(script, "label: gpt\n" + string.Concat(parts.Select(p => $"start={p.Start}, size={p.Sectors}\n")));
        Sfdisk(script, rig.View);
        string P(int n) => Path.Combine(rig.MountPoint, $"vm-p{n}.raw");
        for (int n = 1; n <= 3; n++) Assert.Equal(parts[n - 1].Sectors * S, new FileInfo(P(n)).Length);
        var before = rig.ReadView(0, rig.VirtualSize);

        for (int n = 1; n <= 3; n++)
        {
            var (_, _, fs) = parts[n - 1];
            if (fs == "ext4") Kernel.Ok("mkfs.ext4", "-q", "-F", P(n));
            else Kernel.Ok("mkfs.vfat", P(n));
            string file = Path.Combine(rig.Dir, "file.bin"), name = Path.Combine(rig.Dir, "name.txt");
            File.WriteAllBytes(file, Kernel.Pattern(3 * (int)Mib, 100 + n));
            File.WriteAllText(name, $"partition {n}");
            if (KernelHas(fs))
            {
                Kernel.Ok("mount", "-o", "loop", P(n), rig.FsDir);
                try { Kernel.Ok("cp", file, name, rig.FsDir); }
                finally { Kernel.Ok("umount", rig.FsDir); }
            }
            else
            {
                // A kernel without vfat (this CI's): mtools writes the files through the partition file instead.
                Kernel.RequireTool("mcopy", "mtools");
                Kernel.Ok("mcopy", "-i", P(n), file, name, "::");
            }
            if (fs == "ext4") Kernel.Ok("e2fsck", "-fn", P(n));
            else Kernel.Ok("fsck.vfat", "-n", P(n));
        }

        // Every byte outside the partitions is what it was after sfdisk; each partition file is its slice of the disk.
        var after = rig.ReadView(0, rig.VirtualSize);
        long pos = 0;
        foreach (var (start, sectors, _) in parts)
        {
            FvdRig.SameBytes(before.AsSpan((int)pos, (int)(start * S - pos)), after.AsSpan((int)pos, (int)(start * S - pos)), $"bytes {pos}..{start * S}");
            var file = File.ReadAllBytes(P(Array.FindIndex(parts, p => p.Start == start) + 1));
            FvdRig.SameBytes(after.AsSpan((int)(start * S), (int)(sectors * S)), file, $"partition at sector {start}");
            pos = (start + sectors) * S;
        }
        FvdRig.SameBytes(before.AsSpan((int)pos), after.AsSpan((int)pos), "bytes after the last partition");

        // The table changes through NAME.raw while mounted: p2 deleted, p3 grown by 8 MiB. An open p2 gets EIO.
        using (var p2 = File.OpenHandle(P(2)))
        {
            Kernel.Ok("sfdisk", "-q", "--delete", rig.View, "2");
            File.WriteAllText(script, ", +\n");
            Sfdisk(script, "-N", "3", rig.View);
            Assert.False(File.Exists(P(2)), "vm-p2.raw is still shown after its entry was deleted");
            Assert.True(new FileInfo(P(3)).Length > parts[2].Sectors * S, "vm-p3.raw did not grow with its entry");
            var ex = Assert.ThrowsAny<IOException>(() => RandomAccess.Read(p2, new byte[4096], 0));
            Assert.Contains("Input/output error", ex.Message);
        }
        Assert.Equal(["vm-p1.raw", "vm-p3.raw", "vm.raw"], Directory.GetFiles(rig.MountPoint).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        // p3's file system is still there and whole.
        Kernel.Ok("e2fsck", "-fn", P(3));
        Kernel.Ok("mount", "-o", "loop,ro", P(3), rig.FsDir);
        try { Assert.Equal("partition 3", File.ReadAllText(Path.Combine(rig.FsDir, "name.txt"), Encoding.UTF8)); }
        finally { Kernel.Ok("umount", rig.FsDir); }
        rig.Unmount();
    }

    private static bool KernelHas(string fs) =>
        File.ReadLines("/proc/filesystems").Any(l => l.Split('\t').Last() == fs);

    /// <summary>sfdisk reading its script from a file on stdin.</summary>
    private static void Sfdisk(string script, params string[] args) =>
        Kernel.Ok("sh", "-c", $"sfdisk -q {string.Join(' ', args.Select(a => $"'{a}'"))} < '{script}'");
}
