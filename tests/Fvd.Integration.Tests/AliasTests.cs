// fvd-img never creates, truncates or writes a file that is (by inode, whatever its name) the backing, the
// input of a conversion, or the new image's own metadata file: one line on stderr, exit 1, files unchanged.
using System.Security.Cryptography;

namespace Fvd.Integration.Tests;

public sealed class AliasTests : IDisposable
{
    private readonly CliHarness _h = new();
    public void Dispose() => _h.Dispose();

    private string Hash(string name) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(_h.P(name))));

    private Dictionary<string, string> Snapshot() =>
        Directory.GetFiles(_h.Dir).ToDictionary(f => Path.GetFileName(f), f => Hash(Path.GetFileName(f)));

    private void Template(string name = "base.raw") => _h.MakeTemplate(_h.P(name), 4L << 20, [0, 2], [], seed: 3);

    /// <summary>Runs fvd-img and checks the refusal: exit 1, one line naming why, every file byte-identical.</summary>
    private void Refused(string expect, params string[] args)
    {
        var before = Snapshot();
        var r = _h.Img(args);
        Assert.Equal(1, r.Code);
        var line = Assert.Single(r.ErrLines);
        Assert.Contains(expect, line);
        Assert.Equal(before, Snapshot());
    }

    [Fact]
    public void Create_with_the_backing_as_data_file_is_refused_by_any_name()
    {
        Template();
        Assert.Equal(0, Mono.Unix.Native.Syscall.link(_h.P("base.raw"), _h.P("hard.raw")));
        Assert.Equal(0, Mono.Unix.Native.Syscall.symlink("base.raw", _h.P("soft.raw")));
        foreach (var name in new[] { "base.raw", "./base.raw", "hard.raw", "soft.raw" })
            Refused("refusing to write the data file: it is the backing file",
                "create", "-b", _h.P("base.raw"), "-F", "raw", "-o", $"data_file={name}", _h.P("vm.fvd"), "16M");
        // The data file by its default name (NAME.data).
        File.Copy(_h.P("base.raw"), _h.P("vm.data"));
        Refused("it is the backing file", "create", "-b", "vm.data", "-F", "raw", _h.P("vm.fvd"));
    }

    [Fact]
    public void Create_with_the_metadata_file_as_data_file_is_refused()
    {
        Refused("it is the image's metadata file", "create", "-o", "data_file=vm.fvd", _h.P("vm.fvd"), "1M");
        Assert.False(File.Exists(_h.P("vm.fvd")));
    }

    [Fact]
    public void Convert_to_fvd_whose_data_file_is_the_input_is_refused()
    {
        Template("a.data");
        Refused("it is the input file", "convert", "-O", "fvd", _h.P("a.data"), _h.P("a.fvd"));
        Assert.False(File.Exists(_h.P("a.fvd")));
    }

    [Fact]
    public void Convert_over_the_inputs_own_files_is_refused()
    {
        Template();
        Assert.Equal(0, _h.Img("create", "-b", "base.raw", "-F", "raw", _h.P("vm.fvd")).Code);
        Assert.Equal(0, _h.Img("convert", "-O", "raw", _h.P("vm.fvd"), _h.P("copy.raw")).Code);
        File.Delete(_h.P("copy.raw"));
        Refused("it is the input image's data file", "convert", "-O", "raw", _h.P("vm.fvd"), _h.P("vm.data"));
        Refused("it is the input image's backing file", "convert", "-O", "raw", _h.P("vm.fvd"), _h.P("base.raw"));
        Refused("it is the input image", "convert", "-O", "raw", _h.P("vm.fvd"), Path.Combine(_h.Dir, ".", "vm.fvd"));
        Refused("it is the input image's data file", "convert", "-O", "fvd", "-o", "data_file=vm.data", _h.P("vm.fvd"), _h.P("flat.fvd"));
    }
}
