// Kill -9 of fvdmount during background prefetch: the remount resumes where the persisted bitmap
// says, nothing is lost, and no block whose bit was on disk is read from the template again.
using System.Text.Json;
using Fvd.Core.Format;

namespace Fvd.Fuse.Tests;

public sealed class PrefetchKillTests
{
    private static JsonElement Status(FvdRig rig) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(rig.MountPoint, ".fvd", "vm.json"))).RootElement.Clone();

    [Fact]
    public void Killed_prefetch_resumes_without_rereading_persisted_blocks()
    {
        using var rig = new FvdRig(templateSize: 24 * FvdRig.Mib, virtualSize: 48 * FvdRig.Mib, blockSize: 65536, seed: 9);
        // 2 MiB/s: prefetch checkpoints its bits every 5 s, so after ~7 s a part is persisted and most is not.
        rig.Mount("-o", "prefetch=on,prefetch_max_read=2M,cor=off");
        Kernel.WaitFor(() => Status(rig).GetProperty("prefetch_bytes").GetInt64() >= 12 * FvdRig.Mib, 30, "prefetch progress");
        rig.Kill9();

        var header = rig.ReadHeader();
        Assert.Equal(0u, (uint)(header.Flags & (HeaderFlags.CleanShutdown | HeaderFlags.PrefetchFinished)));
        long blocks = header.BitmapBlocks;
        var bitmap = Bitmap.FromBytes(blocks, File.ReadAllBytes(rig.Image).AsSpan((int)header.BitmapOffset, (int)header.BitmapLength));
        long persisted = bitmap.CountSet() * 65536;
        Assert.True(persisted > 0 && persisted < rig.TemplateSize, $"{persisted} bytes persisted: the kill should fall mid-prefetch");

        rig.Mount("-o", "prefetch=on,cor=off");
        Kernel.WaitFor(() => Status(rig).GetProperty("prefetch").GetString() == "finished", 60, "prefetch to finish after the remount");
        long reread = Status(rig).GetProperty("backing_bytes_read").GetInt64();
        Assert.True(reread <= rig.TemplateSize - persisted,
            $"read {reread} bytes from the template, but only {rig.TemplateSize - persisted} were not persisted");
        FvdRig.SameBytes(rig.InitialContent(), rig.ReadView(0, rig.VirtualSize), "view after the resumed prefetch");
        rig.Unmount();
        Assert.True(rig.IsClean);
        Assert.True((rig.ReadHeader().Flags & HeaderFlags.PrefetchFinished) != 0);
    }
}
