// fvd-img prefetch [-p] [--max-read RATE] [--max-write RATE] IMAGE — copy every block still in the backing
// into the image now (an operator's offline prefetch), then mark it finished (paper 3.3.5).
using System.CommandLine;
using Fvd.Core.Image;

namespace Fvd.Img;

internal sealed class PrefetchCommand(Cli cli) : ImgCommand(cli)
{
    protected override string Name => "prefetch";
    protected override string Description => "Copy every block still in the backing into the image; afterwards the data file is a plain RAW image.";

    private readonly Option<bool> _progress = CommonOptions.Progress();
    private readonly Option<string?> _maxRead = new("--max-read") { Description = "Upper read rate (e.g. 50M = 50 MiB/s); default: unlimited" };
    private readonly Option<string?> _maxWrite = new("--max-write") { Description = "Upper write rate; default: unlimited" };
    private readonly Argument<string> _image = CommonOptions.Image();

    protected override void Configure(Command c)
    {
        c.Options.Add(_progress);
        c.Options.Add(_maxRead);
        c.Options.Add(_maxWrite);
        c.Arguments.Add(_image);
    }

    private static int KiBps(string? rate, string what)
    {
        if (rate is null) return 0;
        long bytes = Sizes.Parse(rate, what);
        return (int)Math.Clamp(bytes / 1024, 1, int.MaxValue);
    }

    protected override int Execute(ParseResult p)
    {
        string path = p.GetValue(_image)!;
        int maxRead = KiBps(p.GetValue(_maxRead), "--max-read");
        int maxWrite = KiBps(p.GetValue(_maxWrite), "--max-write");
        using var img = FvdImage.Open(path);
        if (!img.Header.HasBacking)
        {
            Cli.Out.WriteLine($"{path}: no backing file; nothing to prefetch");
            return ExitCode.Ok;
        }
        // An operator asked for it: no back-off on contention (lower limits 0), only the given upper limits.
        var limits = img.Header.Prefetch with { MaxReadKiBps = maxRead, MaxWriteKiBps = maxWrite, MinReadKiBps = 0, MinWriteKiBps = 0 };
        Cli.WithProgress(p.GetValue(_progress), "Prefetching", progress =>
        {
            img.PrefetchNow(limits, progress);
            return 0;
        });
        var s = img.Status;
        Cli.Out.WriteLine($"prefetch finished: {s.BlocksLocal}/{s.BlocksTotal} blocks local, {s.BackingBytesRead} bytes read from the backing");
        Cli.Out.WriteLine($"the data file {img.DataPath} is now a plain RAW image; 'fvd-img detach {path}' drops the backing reference");
        return ExitCode.Ok;
    }
}
