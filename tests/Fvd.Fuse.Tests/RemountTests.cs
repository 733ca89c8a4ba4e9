// What a script does: `umount /mnt; fvdmount vm.fvd /mnt` and `umount /mnt; fvd-img check vm.fvd` right
// after heavy writes. umount returns before the daemon has flushed and closed the image; the next command
// must wait for that (the daemon marks the image closing) instead of failing with "in use".
namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class RemountTests
{
    private const long Mib = 1 << 20;

    private static void HeavyWrites(FvdRig rig, int seed)
    {
        // Buffered writes: the data file's dirty pages are left for the daemon's final fdatasync.
        string src = Path.Combine(rig.Dir, "payload");
        File.WriteAllBytes(src, Kernel.Pattern((int)(128 * Mib), seed));
        Kernel.Ok("dd", $"if={src}", $"of={rig.View}", "bs=1M", "conv=notrunc", "status=none");
        File.Delete(src);
    }

    [Fact]
    public void Umount_then_mount_or_check_at_once_succeeds_after_heavy_writes()
    {
        using var rig = new FvdRig(templateSize: 16 * Mib, virtualSize: 256 * Mib);
        string fvdmount = Kernel.FvdMountPath();
        string fvdImg = FvdRig.BuiltTool("Fvd.Img", "fvd-img");

        var (rc, o, e) = Kernel.Run(fvdmount, rig.Image, rig.MountPoint); // daemon mode, as a script runs it
        Assert.True(rc == 0, $"first mount: {o}{e}");

        HeavyWrites(rig, 1);
        Kernel.Ok("umount", rig.MountPoint);
        (rc, o, e) = Kernel.Run(fvdmount, rig.Image, rig.MountPoint);
        Assert.True(rc == 0, $"fvdmount right after umount exited {rc}: {o}{e}");

        // The library's check the moment umount(2) returns: no process start-up hides the daemon's close.
        for (int round = 0; round < 3; round++)
        {
            HeavyWrites(rig, 2);
            Assert.Equal(0, TestLibc.umount2(rig.MountPoint, 0));
            rig.AssertCheckClean();
            Kernel.Ok(fvdmount, rig.Image, rig.MountPoint);
        }

        HeavyWrites(rig, 3);
        Kernel.Ok("umount", rig.MountPoint);
        (rc, o, e) = Kernel.Run(fvdImg, "check", rig.Image);
        Assert.True(rc == 0, $"fvd-img check right after umount exited {rc}: {o}{e}");
        Assert.Contains("No errors were found", o);

        // The last round's data is all there: the daemon's flush completed before check got the lock.
        var expect = Kernel.Pattern((int)(128 * Mib), 3);
        var got = rig.ReadWithLibrary(out bool unclean);
        Assert.False(unclean);
        FvdRig.SameBytes(expect, got.AsSpan(0, expect.Length), "disk after remounts");
    }
}
