// Issue 3 through the real kernel and the real fvdmount binary, over FVD images whose backing is a raw template
// with random data and whose virtual size exceeds the template (min-size): dd at odd offsets, ext4 on a
// direct-io loop device across a remount, qemu-io/qemu-img, kill -9 mid-workload, fio verify, fsx, and
// concurrent sub-block writes into uncopied template blocks.
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class FvdImageKernelTests
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
}
