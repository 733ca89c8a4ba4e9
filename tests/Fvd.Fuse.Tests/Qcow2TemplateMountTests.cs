// A compressed qcow2 template (zstd, with zero clusters) through the real kernel and fvdmount: the view reads
// what qemu reads, copy-on-read and guest writes land in the data file, the qcow2 is never written.
using Fvd.Core.Image;

namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class Qcow2TemplateMountTests
{
    private const long Mib = FvdRig.Mib;

    [Fact]
    public void An_image_over_a_compressed_qcow2_template_reads_as_qemu_reads_it_and_never_writes_it()
    {
        Kernel.RequireTool("qemu-img", "qemu-utils");
        Kernel.RequireTool("qemu-io", "qemu-utils");
        using var rig = new FvdRig(8 * Mib, 24 * Mib, seed: 21);
        // Replace the rig's raw template with a qcow2 one: compressed, plain and zero clusters.
        string q = Path.Combine(rig.Dir, "template.qcow2");
        Kernel.Ok("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", q, (16 * Mib).ToString(System.Globalization.CultureInfo.InvariantCulture));
        Kernel.Ok("qemu-io", "-f", "qcow2", "-c", "write -c -P 0x5a 0 2M", "-c", "write -P 0x33 3000000 1000001",
            "-c", "write -z 5M 1M", "-c", "write -c -P 0x21 12M 1M", q);
        Kernel.Ok("qemu-img", "convert", "-f", "qcow2", "-O", "raw", q, Path.Combine(rig.Dir, "expected.raw"));
        File.Delete(rig.Image);
        File.Delete(Path.Combine(rig.Dir, "vm.data"));
        File.Delete(rig.Template);
        FvdImage.Create(rig.Image, new FvdCreateOptions
        {
            VirtualSize = rig.VirtualSize, BackingFile = "template.qcow2", BackingFormat = "qcow2", CopyOnRead = true,
        });
        string hash = FvdRig.HashFile(q);
        var expected = new byte[rig.VirtualSize];
        File.ReadAllBytes(Path.Combine(rig.Dir, "expected.raw")).CopyTo(expected, 0);

        rig.Mount();
        FvdRig.SameBytes(expected, rig.ReadView(0, rig.VirtualSize), "the view over the qcow2");
        // Sector-aligned: reading the whole view with copy-on-read finishes the image, and a finished image
        // is passed through, where O_DIRECT follows the data file's alignment rules (man/fvdmount.1).
        var pattern = Kernel.Pattern(300_032, 5);
        string pat = Path.Combine(rig.Dir, "pattern");
        File.WriteAllBytes(pat, pattern);
        Kernel.Ok("dd", $"if={pat}", $"of={rig.View}", "bs=4096", "seek=1500160", "oflag=seek_bytes,direct", "conv=notrunc,fsync", "status=none");
        pattern.CopyTo(expected, 1_500_160);
        FvdRig.SameBytes(expected, rig.ReadView(0, rig.VirtualSize), "the view after a write");
        rig.Unmount();

        FvdRig.SameBytes(expected, rig.ReadWithLibrary(out bool unclean), "the image read with the library");
        Assert.False(unclean);
        Assert.Equal(hash, FvdRig.HashFile(q));
    }
}
