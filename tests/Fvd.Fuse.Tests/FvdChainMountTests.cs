// A chain raw <- FVD <- FVD <- FVD through the real kernel and fvdmount: the view reads every layer's writes,
// writes land only in the top image, and no lower file changes.
using Fvd.Core;
using Fvd.Core.Image;
using Fvd.Core.Image.ImageOps;

namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class FvdChainMountTests
{
    private const long Mib = FvdRig.Mib;

    private static void WriteLayer(string image, long offset, byte[] data, byte[] expected)
    {
        using var img = FvdImage.Open(image);
        img.Write(offset, data);
        data.CopyTo(expected, offset);
    }

    [Fact]
    public void A_three_level_fvd_chain_over_raw_is_mounted_read_and_written_through()
    {
        using var rig = new FvdRig(8 * Mib, 16 * Mib, seed: 31);
        File.Delete(rig.Image);
        File.Delete(Path.Combine(rig.Dir, "vm.data"));
        var expected = rig.InitialContent();
        string a = Path.Combine(rig.Dir, "a.fvd"), b = Path.Combine(rig.Dir, "b.fvd");
        FvdImage.Create(a, new FvdCreateOptions { VirtualSize = 8 * Mib, BackingFile = "template.raw" });
        WriteLayer(a, 1 * Mib + 100, Kernel.Pattern(70_000, 1), expected);
        FvdImage.Create(b, new FvdCreateOptions { VirtualSize = 10 * Mib, BackingFile = "a.fvd", BackingFormat = "fvd" });
        WriteLayer(b, 3 * Mib - 5, Kernel.Pattern(10_000, 2), expected);
        WriteLayer(b, 9 * Mib, Kernel.Pattern(4096, 3), expected); // past a: b's free-write space
        FvdImage.Create(rig.Image, new FvdCreateOptions { VirtualSize = rig.VirtualSize, BackingFile = "b.fvd", BackingFormat = "fvd", CopyOnRead = true });
        string[] lower = [rig.Template, a, Path.Combine(rig.Dir, "a.data"), b, Path.Combine(rig.Dir, "b.data")];
        var hashes = lower.Select(FvdRig.HashFile).ToArray();

        rig.Mount();
        FvdRig.SameBytes(expected, rig.ReadView(0, rig.VirtualSize), "the view over the chain");
        var pattern = Kernel.Pattern(1_000_448, 4);
        string pat = Path.Combine(rig.Dir, "pattern");
        File.WriteAllBytes(pat, pattern);
        Kernel.Ok("dd", $"if={pat}", $"of={rig.View}", "bs=4096", $"seek={(2 * Mib) + 512}", "oflag=seek_bytes,direct", "conv=notrunc,fsync", "status=none");
        pattern.CopyTo(expected, (2 * Mib) + 512);
        FvdRig.SameBytes(expected, rig.ReadView(0, rig.VirtualSize), "the view after a write");
        // The mounted image holds b (and a) shared: committing into b must fail, not change it underneath.
        var e = Assert.Throws<FvdException>(() => Committer.Commit(b, new CommitOptions { LockWait = Fvd.Core.Io.LockWait.None }));
        Assert.Equal(FvdErrorKind.Busy, e.Kind);
        rig.Unmount();

        FvdRig.SameBytes(expected, rig.ReadWithLibrary(out bool unclean), "the image read with the library");
        Assert.False(unclean);
        rig.AssertCheckClean();
        Assert.Equal(hashes, lower.Select(FvdRig.HashFile).ToArray());
    }
}
