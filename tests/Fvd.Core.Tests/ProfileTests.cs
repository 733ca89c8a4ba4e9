using Fvd.Core.Format;
using Fvd.Core.Image;

namespace Fvd.Core.Tests;

/// <summary>Profile-directed prefetch: record, store, reload, and fetch the profile first.</summary>
public class ProfileTests
{
    [Fact]
    public void RecordedProfileIsStoredAndPrefetchedFirst()
    {
        using var dir = new TempDir();
        var backing = new byte[4 << 20];
        new Random(3).NextBytes(backing);
        File.WriteAllBytes(dir.File("base.raw"), backing);
        string path = dir.File("t.fvd");
        FvdImage.Create(path, new FvdCreateOptions { VirtualSize = 8 << 20, BackingFile = "base.raw", BlockSize = 65536 });
        using (var img = FvdImage.Open(path))
        {
            img.StartProfileRecording();
            img.Read(3 << 20, new byte[65536]);
            img.Read(1 << 20, new byte[1000]);
            img.Read(3 << 20, new byte[65536]); // a second read of the same block is not recorded again
            var rec = img.RecordedProfile();
            Assert.Equal(new List<(long, long)> { (3 << 20, 65536), (1 << 20, 65536) }, rec);
            img.WriteProfile(rec);
        }
        var hdr = HeaderSlots.Current(File.ReadAllBytes(path));
        Assert.True((hdr.Compatible & CompatibleFeatures.PrefetchProfile) != 0);
        using var re = FvdImage.Open(path);
        Assert.Equal(2, re.PrefetchProfileEntries.Count);
        re.StartBackgroundWork(prefetch: PrefetchSettings.Default with { StartDelaySeconds = 0, MaxReadKiBps = 256, ChunkBytes = 65536, MinReadKiBps = 0, MinWriteKiBps = 0 });
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!(re.Bitmap.Get(48) && re.Bitmap.Get(16)) && DateTime.UtcNow < deadline) Thread.Sleep(2);
        Assert.True(re.Bitmap.Get(48) && re.Bitmap.Get(16), "profile blocks were not prefetched");
        Assert.False(re.Bitmap.Get(40), "a block outside the profile was fetched before the profile finished");
    }

    [Fact]
    public void ProfileOfTheLastPartialBlockEndsAtTheBackingsEnd()
    {
        // A GPT template: its backup header is the last sector, in a block that reaches past the template's end.
        using var dir = new TempDir();
        const long tail = 10L << 20, size = tail + 512;
        File.WriteAllBytes(dir.File("base.raw"), new byte[size]);
        string path = dir.File("t.fvd");
        FvdImage.Create(path, new FvdCreateOptions { VirtualSize = 20 << 20, BackingFile = "base.raw", BlockSize = 4096, ZeroAware = false });
        var expected = new List<(long, long)> { (tail, 512) };
        using (var img = FvdImage.Open(path))
        {
            img.StartProfileRecording();
            img.Read(tail, new byte[4096]); // the guest reads the whole last block
            Assert.Equal(expected, img.RecordedProfile());
            // The read log fvdmount wrote before names the whole block; it must be accepted too.
            Assert.Equal(expected, img.BuildProfile(new[] { (tail, 4096L), (size, 4096L), (long.MaxValue - 1, 2L) }));
            img.WriteProfile(img.RecordedProfile());
        }
        using var re = FvdImage.Open(path);
        Assert.Equal(expected, re.PrefetchProfileEntries);
    }

    [Fact]
    public void ProfileOutsideBackingIsRefused()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("base.raw"), new byte[1 << 20]);
        string path = dir.File("t.fvd");
        FvdImage.Create(path, new FvdCreateOptions { VirtualSize = 2 << 20, BackingFile = "base.raw", ZeroAware = false });
        using var img = FvdImage.Open(path);
        var e = Assert.Throws<FvdException>(() => img.WriteProfile(new[] { (1L << 20, 4096L) }));
        Assert.Equal(FvdErrorKind.InvalidArgument, e.Kind);
    }
}
