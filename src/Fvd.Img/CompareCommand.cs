// fvd-img compare [-f FMT] [-F FMT] [-s] [-p] [-q] A B — as qemu-img compare: exit 0 identical, 1 different, 2 error.
using System.CommandLine;
using Fvd.Core;
using Fvd.Core.Image;
using Fvd.Core.Image.ImageOps;
using Fvd.Core.Io;

namespace Fvd.Img;

internal sealed class CompareCommand(Cli cli) : ImgCommand(cli)
{
    protected override string Name => "compare";
    protected override string Description => "Compare what two images read (raw, fvd or qcow2): exit 0 identical, 1 different, 2 error.";

    private const int Error = 2;

    private readonly Option<string?> _formatA = CommonOptions.Format("Format of the first image: raw, fvd or qcow2 (default: by magic)");
    private readonly Option<string?> _formatB = new("-F") { Description = "Format of the second image: raw, fvd or qcow2 (default: by magic)", HelpName = "FMT" };
    private readonly Option<bool> _strict = new("-s", "--strict") { Description = "Strict: images of different sizes differ" };
    private readonly Option<bool> _progress = CommonOptions.Progress();
    private readonly Option<bool> _quiet = new("-q", "--quiet") { Description = "Print nothing; only the exit code tells" };
    private readonly Argument<string> _a = new("IMAGE1") { Description = "First image" };
    private readonly Argument<string> _b = new("IMAGE2") { Description = "Second image" };

    protected override void Configure(Command c)
    {
        c.Options.Add(_formatA);
        c.Options.Add(_formatB);
        c.Options.Add(_strict);
        c.Options.Add(_progress);
        c.Options.Add(_quiet);
        c.Arguments.Add(_a);
        c.Arguments.Add(_b);
    }

    protected override int Execute(ParseResult p)
    {
        bool quiet = p.GetValue(_quiet);
        try
        {
            using var a = Open(p.GetValue(_a)!, p.GetValue(_formatA), Cli.LockWait(p));
            using var b = Open(p.GetValue(_b)!, p.GetValue(_formatB), Cli.LockWait(p));
            var (result, offset) = Cli.WithProgress(p.GetValue(_progress) && !quiet, "Comparing", progress => Comparer.Compare(a, b, p.GetValue(_strict), progress));
            if (!quiet)
            {
                Cli.Out.WriteLine(result switch
                {
                    CompareResult.Identical => "Images are identical.",
                    CompareResult.SizeMismatch => "Strict mode: Image size mismatch!",
                    _ => $"Content mismatch at offset {offset}!",
                });
            }
            return result == CompareResult.Identical ? ExitCode.Ok : ExitCode.Failure;
        }
        catch (UsageException e)
        {
            Cli.Usage(Name, e.Message);
            return Error;
        }
        catch (FvdException e)
        {
            Cli.Err.WriteLine($"{Cli.Tool}: {Cli.Describe(e)}");
            if (Cli.Debug) Cli.Err.WriteLine(e);
            return Error;
        }
    }

    private static IBlockDevice Open(string path, string? format, LockWait wait)
    {
        if (format is not null && !Converter.SourceFormats.Contains(format))
            throw new UsageException($"unknown format '{format}' (supported: raw, fvd, qcow2)");
        return Converter.OpenSource(path, format ?? Converter.DetectFormat(path), wait);
    }
}
