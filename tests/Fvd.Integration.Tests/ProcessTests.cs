// The built fvd-img run as a real process: Main, exit codes, stderr, and reading an image that another
// process holds locked (the way fvdmount holds it).
using System.Diagnostics;
using Fvd.Core.Image;

namespace Fvd.Integration.Tests;

public sealed class ProcessTests : IDisposable
{
    private readonly CliHarness _h = new();
    public void Dispose() => _h.Dispose();

    private static CliResult Run(IDictionary<string, string>? env, params string[] args)
    {
        var exe = Path.Combine(AppContext.BaseDirectory, "fvd-img");
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment.Remove("FVD_DEBUG");
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var so = p.StandardOutput.ReadToEndAsync();
        var se = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        return new CliResult(p.ExitCode, so.Result, se.Result);
    }

    [Fact]
    public void Info_and_map_read_an_image_held_open_for_writing_check_refuses()
    {
        _h.MakeTemplate(_h.P("base.raw"), 8L << 20, [2], []);
        Assert.Equal(0, Run(null, "create", "-q", "-b", _h.P("base.raw"), "-F", "raw", _h.P("a.fvd")).Code);
        using (var img = FvdImage.Open(_h.P("a.fvd"))) // exclusive flock, like fvdmount
        {
            var info = Run(null, "info", _h.P("a.fvd"));
            Assert.True(info.Code == 0, info.Err);
            Assert.Contains("clean: no", info.Out);
            Assert.Equal(0, Run(null, "map", _h.P("a.fvd")).Code);
            var check = Run(null, "check", _h.P("a.fvd"));
            Assert.Equal(1, check.Code);
            Assert.Contains("in use", check.Err);
        }
        Assert.Equal(0, Run(null, "check", _h.P("a.fvd")).Code);
    }

    [Fact]
    public void Errors_are_one_line_and_FVD_DEBUG_adds_the_stack()
    {
        var r = Run(null, "info", _h.P("missing.fvd"));
        Assert.Equal(1, r.Code);
        Assert.Equal($"fvd-img: {_h.P("missing.fvd")}: image not found", r.Err.Trim());
        var d = Run(new Dictionary<string, string> { ["FVD_DEBUG"] = "1" }, "info", _h.P("missing.fvd"));
        Assert.Equal(1, d.Code);
        Assert.Contains("   at ", d.Err);
        var v = Run(null, "--version");
        Assert.Equal(0, v.Code);
        Assert.NotEmpty(v.Out.Trim());
    }
}
