// The FVD-specific mount options as parsed from -o, the environment and a JSON config (no kernel).
using Fvd.Core.Format;
using Fvd.Mount;

namespace Fvd.Fuse.Tests;

public sealed class MountOptionTests
{
    private static MountSettings Load(string options, Dictionary<string, string>? env = null) =>
        Program.LoadSettings(CommandLine.Parse(["-o", options, "a.fvd", "/mnt"]), env ?? new Dictionary<string, string>());

    [Fact]
    public void Options_parse_into_image_options()
    {
        var s = Load("cor=off,prefetch=30,prefetch_max_read=20M,prefetch_min_read=800K,passthrough=off");
        var o = s.ToImageOptions();
        Assert.False(o.CopyOnRead);
        Assert.Equal(30, o.PrefetchDelaySeconds);
        Assert.Equal(20 * 1024, o.PrefetchMaxReadKiBps);
        Assert.Equal(800, o.PrefetchMinReadKiBps);
        Assert.False(o.Passthrough);
        Assert.False(s.ToFuseOptions().Passthrough);
        Assert.False(o.RecordProfile);
    }

    [Fact]
    public void Defaults_leave_the_header_in_charge()
    {
        var o = Load("ro").ToImageOptions();
        Assert.Null(o.CopyOnRead);
        Assert.Null(o.PrefetchDelaySeconds);
        Assert.Null(ImageOpener.PrefetchFor(PrefetchSettings.Default, o));
        Assert.True(o.Passthrough);
        Assert.True(o.ReadOnly);
    }

    [Theory]
    [InlineData("prefetch=on", 0)]
    [InlineData("prefetch", 0)]
    [InlineData("prefetch=off", -1)]
    [InlineData("prefetch=0", 0)]
    [InlineData("prefetch=120", 120)]
    [InlineData("record_profile=/tmp/x.log", -1)]
    [InlineData("record_profile=/tmp/x.log,prefetch=on", 0)]
    public void Prefetch_values(string opt, int delay)
    {
        var o = Load(opt).ToImageOptions();
        Assert.Equal(delay, o.PrefetchDelaySeconds);
        var merged = ImageOpener.PrefetchFor(PrefetchSettings.Default with { MaxReadKiBps = 7 }, o)!;
        Assert.Equal(delay, merged.StartDelaySeconds);
        Assert.Equal(7, merged.MaxReadKiBps); // untouched fields keep the header's values
    }

    [Theory]
    [InlineData("1024", 1)]
    [InlineData("1500", 2)]
    [InlineData("1K", 1)]
    [InlineData("1.5M", 1536)]
    [InlineData("2G", 2 * 1024 * 1024)]
    [InlineData("0", 0)]
    public void Rates_are_bytes_per_second_with_suffixes(string rate, int kib) =>
        Assert.Equal(kib, MountSettings.KiBps("prefetch_max_read", rate));

    [Theory]
    [InlineData("cor=maybe", "cor=maybe")]
    [InlineData("prefetch=soon", "prefetch=soon")]
    [InlineData("prefetch_max_read=fast", "prefetch_max_read=fast")]
    [InlineData("passthrough=sometimes", "passthrough=sometimes")]
    [InlineData("record_profile", "needs a value")]
    public void Bad_values_are_usage_errors(string opt, string message)
    {
        var e = Assert.Throws<UsageException>(() => Load(opt));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Record_profile_takes_one_image_and_becomes_absolute()
    {
        Assert.Throws<UsageException>(() =>
            Program.LoadSettings(CommandLine.Parse(["-o", "record_profile=x.log", "a.fvd", "b.fvd", "/mnt"]), new Dictionary<string, string>()));
        var s = Load("record_profile=x.log");
        Assert.Equal(Path.GetFullPath("x.log"), s.RecordProfile);
        Assert.True(s.ToImageOptions().RecordProfile);
    }

    [Fact]
    public void Environment_and_json_set_the_same_keys()
    {
        var env = new Dictionary<string, string> { ["FVDMOUNT_COPYONREAD"] = "on", ["FVDMOUNT_PREFETCH"] = "5", ["FVDMOUNT_PASSTHROUGH"] = "off" };
        var o = Load("ro", env).ToImageOptions();
        Assert.True(o.CopyOnRead);
        Assert.Equal(5, o.PrefetchDelaySeconds);
        Assert.False(o.Passthrough);

        string cfg = Path.Combine(Path.GetTempPath(), $"fvdmount-opt-{Guid.NewGuid():N}.json");
        File.WriteAllText(cfg, """{ "CopyOnRead": "off", "Prefetch": "on", "PrefetchMaxRead": "10M" }""");
        try
        {
            var p = CommandLine.Parse(["--config", cfg, "-o", "prefetch=off", "a.fvd", "/mnt"]);
            var j = Program.LoadSettings(p, new Dictionary<string, string>()).ToImageOptions();
            Assert.False(j.CopyOnRead);
            Assert.Equal(-1, j.PrefetchDelaySeconds); // the command line wins over the file
            Assert.Equal(10 * 1024, j.PrefetchMaxReadKiBps);
        }
        finally
        {
            File.Delete(cfg);
        }
    }
}
