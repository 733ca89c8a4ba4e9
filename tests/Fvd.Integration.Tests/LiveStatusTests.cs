// fvd-img info finds the live counters of an image that fvdmount serves, through the mount table.
using Fvd.Img;

namespace Fvd.Integration.Tests;

public sealed class LiveStatusTests : IDisposable
{
    private readonly CliHarness _h = new();
    public void Dispose() => _h.Dispose();

    [Fact]
    public void Finds_the_status_file_of_a_served_image_with_escaped_names()
    {
        string image = _h.P("vm one.fvd");
        string mnt = _h.P("m nt");
        Directory.CreateDirectory(Path.Combine(mnt, ".fvd"));
        File.WriteAllText(Path.Combine(mnt, ".fvd", "vm one.json"), "{ \"backing_bytes_read\": 42, \"prefetch\": \"running\" }");
        string mounts = _h.P("mounts");
        File.WriteAllText(mounts,
            "proc /proc proc rw 0 0\n" +
            $"/other.fvd,{image.Replace(" ", "\\040")} {mnt.Replace(" ", "\\040")} fuse.fvd rw,nosuid 0 0\n");
        var live = LiveStatus.Find(image, mounts);
        Assert.NotNull(live);
        Assert.Equal(mnt, live!.Value.MountPoint);
        Assert.Equal(42, live.Value.Status.GetProperty("backing_bytes_read").GetInt32());
        Assert.Null(LiveStatus.Find(_h.P("not-mounted.fvd"), mounts));
    }
}
