// Extended attributes and ownership of a view file through the real kernel: what libvirt's DAC driver does to a
// disk before and after a domain runs (set trusted.* names, chown, read them back, remove them, chown back).
namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class XattrKernelTests
{
    [Fact]
    public void Setfattr_getfattr_and_chown_on_the_view_like_libvirts_dac_driver()
    {
        Kernel.RequireTool("setfattr", "attr");
        using var rig = new FvdRig(4 * FvdRig.Mib, 8 * FvdRig.Mib, seed: 3);
        rig.Mount("-o", "allow_other");
        Kernel.Ok("setfattr", "-n", "trusted.libvirt.security.dac", "-v", "+0:+0", rig.View);
        Kernel.Ok("setfattr", "-n", "trusted.libvirt.security.ref_dac", "-v", "1", rig.View);
        Kernel.Ok("setfattr", "-n", "user.comment", "-v", "0x00ff10", rig.View);
        Kernel.Ok("chown", "107:108", rig.View);
        Kernel.Ok("chmod", "0600", rig.View);

        var (rc, dump, err) = Kernel.Run("getfattr", "--absolute-names", "-d", "-m", "-", "-e", "text", rig.View);
        Assert.True(rc == 0, err);
        Assert.Contains("trusted.libvirt.security.dac=\"+0:+0\"", dump);
        Assert.Contains("trusted.libvirt.security.ref_dac=\"1\"", dump);
        Assert.Contains("user.comment=0x00ff10", Kernel.Run("getfattr", "--absolute-names", "-e", "hex", "-n", "user.comment", rig.View).Out);
        Assert.Equal("107:108 600", Kernel.Run("stat", "-c", "%u:%g %a", rig.View).Out.Trim());

        // A missing name: getfattr reports "No such attribute" (ENODATA) and fails.
        var missing = Kernel.Run("getfattr", "--absolute-names", "-n", "trusted.nothing", rig.View);
        Assert.NotEqual(0, missing.Rc);
        Assert.Contains("No such attribute", missing.Err);

        Kernel.Ok("setfattr", "-x", "trusted.libvirt.security.dac", rig.View);
        Kernel.Ok("setfattr", "-x", "trusted.libvirt.security.ref_dac", rig.View);
        Kernel.Ok("chown", "0:0", rig.View);
        dump = Kernel.Run("getfattr", "--absolute-names", "-d", "-m", "-", rig.View).Out;
        Assert.DoesNotContain("trusted.libvirt", dump);
        Assert.Contains("user.comment", dump);
        Assert.Equal("0:0", Kernel.Run("stat", "-c", "%u:%g", rig.View).Out.Trim());
        // The data is untouched by all this.
        FvdRig.SameBytes(rig.InitialContent(), rig.ReadView(0, rig.VirtualSize), "the view after the xattr changes");
        rig.Unmount();
    }
}
