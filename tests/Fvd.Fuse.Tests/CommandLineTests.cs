// fvdmount's option handling without mounting: -o lists, precedence of JSON < environment < command line.
using System.Collections;
using Fvd.Mount;

namespace Fvd.Fuse.Tests;

public sealed class CommandLineTests
{
    private static MountSettings Load(string[] args, Dictionary<string, string>? env = null) =>
        Program.LoadSettings(CommandLine.Parse(args), new Hashtable(env ?? []));

    [Fact]
    public void Options_list_maps_to_settings()
    {
        var s = Load(["-f", "-o", "ro,allow_other,uid=107,gid=108,umask=077,threads=8,direct_io,partitions,nosuid,x-systemd.automount", "a.fvd", "b.img", "/mnt/disks"]);
        Assert.True(s.Foreground);
        Assert.True(s.ReadOnly);
        Assert.Equal(["a.fvd", "b.img"], s.Images);
        Assert.Equal("/mnt/disks", s.MountPoint);
        var o = s.ToFuseOptions();
        Assert.True(o.AllowOther);
        Assert.True(o.DefaultPermissions); // implied by allow_other
        Assert.Equal(107u, o.Uid);
        Assert.Equal(108u, o.Gid);
        Assert.Equal(Convert.ToUInt32("077", 8), o.Umask);
        Assert.Equal(8, o.Threads);
        Assert.True(o.DirectIo);
        Assert.True(o.Partitions);
        Assert.False(Load(["x.img", "/m"]).ToFuseOptions().Partitions);
        Assert.False(o.Debug);
    }

    [Fact]
    public void Debug_implies_foreground()
    {
        Assert.True(Load(["-d", "x.img", "/m"]).Foreground);
        Assert.True(Load(["-o", "debug", "x.img", "/m"]).Debug);
    }

    [Fact]
    public void Command_line_beats_environment_beats_json()
    {
        string json = Path.GetTempFileName();
        try
        {
            File.WriteAllText(json, """{ "Threads": 2, "ReadOnly": true, "Umask": "007", "Images": ["j.img"], "MountPoint": "/j" }""");
            var fromJson = Load(["--config", json]);
            Assert.Equal(2, fromJson.Threads);
            Assert.True(fromJson.ReadOnly);
            Assert.Equal(["j.img"], fromJson.Images);
            Assert.Equal("/j", fromJson.MountPoint);

            var env = new Dictionary<string, string> { ["FVDMOUNT_THREADS"] = "3", ["FVDMOUNT_UMASK"] = "002", ["OTHER_THREADS"] = "9" };
            var fromEnv = Load(["--config", json], env);
            Assert.Equal(3, fromEnv.Threads);
            Assert.Equal("002", fromEnv.Umask);

            var fromCli = Load(["--config", json, "-o", "threads=5,rw", "c.img", "/c"], env);
            Assert.Equal(5, fromCli.Threads);
            Assert.False(fromCli.ReadOnly);
            Assert.Equal("002", fromCli.Umask);
            Assert.Equal(["c.img"], fromCli.Images);
            Assert.Equal("/c", fromCli.MountPoint);
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Theory]
    [InlineData("-o", "bogus")]
    [InlineData("-o", "uid=")]
    [InlineData("-o", "threads=0")]
    [InlineData("-o", "umask=8")]
    [InlineData("--wat")]
    public void Bad_options_are_usage_errors(params string[] bad)
    {
        Assert.ThrowsAny<Exception>(() => Load([.. bad, "x.img", "/m"]));
    }

    [Fact]
    public void Duplicate_display_names_are_refused_and_names_drop_the_extension()
    {
        Assert.Equal("vm1.raw", ImageOpener.DisplayName("/var/lib/images/vm1.fvd"));
        Assert.Equal("disk.raw", ImageOpener.DisplayName("disk.raw"));
        Assert.Throws<UsageException>(() => Load(["a/x.fvd", "b/x.img", "/m"]));
    }
}
