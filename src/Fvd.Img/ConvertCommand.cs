// fvd-img convert [-p] [-f raw|fvd|qcow2] [-O raw|fvd] [-o OPTS] [-S SIZE] SRC DST — sparse in, sparse out.
using System.CommandLine;
using Fvd.Core.Image;

namespace Fvd.Img;

internal sealed class ConvertCommand(Cli cli) : ImgCommand(cli)
{
    protected override string Name => "convert";
    protected override string Description => "Convert raw, fvd or qcow2 to raw or fvd (flattened, no backing); holes stay holes.";

    private readonly Option<bool> _progress = CommonOptions.Progress();
    private readonly Option<string?> _format = CommonOptions.Format("Input format: raw, fvd or qcow2 (default: by magic, else raw)");
    private readonly Option<string> _outFormat = new("-O", "--output-format") { Description = "Output format: raw or fvd", DefaultValueFactory = _ => "raw", HelpName = "raw|fvd" };
    private readonly Option<string[]> _options = new("-o", "--options") { Description = "Creation options for -O fvd, as for create (-o help)", HelpName = "OPTS" };
    private readonly Option<string?> _sparse = new("-S", "--sparse-size") { Description = "Granule of zero detection (default 4K); 0 writes every byte", HelpName = "SIZE" };
    private readonly Argument<string> _src = new("SRC") { Description = "Input image" };
    private readonly Argument<string> _dst = new("DST") { Description = "Output image (replaced if it exists)" };

    protected override void Configure(Command c)
    {
        c.Options.Add(_progress);
        c.Options.Add(_format);
        c.Options.Add(_outFormat);
        c.Options.Add(_options);
        c.Options.Add(_sparse);
        c.Arguments.Add(_src);
        c.Arguments.Add(_dst);
    }

    protected override int Execute(ParseResult p)
    {
        var lists = p.GetValue(_options);
        if (ImageOptions.IsHelp(lists))
        {
            Cli.Out.WriteLine(ImageOptions.Help);
            return ExitCode.Ok;
        }
        string outFormat = p.GetValue(_outFormat)!;
        if (!Converter.Formats.Contains(outFormat))
            throw new UsageException($"unknown output format '{outFormat}' (supported: raw, fvd)");
        string? inFormat = p.GetValue(_format);
        if (inFormat is not null && !Converter.SourceFormats.Contains(inFormat))
            throw new UsageException($"unknown input format '{inFormat}' (supported: raw, fvd, qcow2)");
        if (lists is { Length: > 0 } && outFormat != "fvd")
            throw new UsageException("-o options apply only to -O fvd");
        var opts = ImageOptions.Parse(lists, allowBacking: false);
        long sparse = p.GetValue(_sparse) is string s ? Sizes.Parse(s, "sparse size") : 4096;

        Cli.WithProgress(p.GetValue(_progress), "Converting", progress =>
        {
            Converter.Convert(p.GetValue(_src)!, p.GetValue(_dst)!, new ConvertOptions
            {
                SourceFormat = inFormat,
                TargetFormat = outFormat,
                FvdOptions = opts.Apply(new FvdCreateOptions { VirtualSize = 1 }),
                SparseSize = sparse,
                Progress = progress,
                LockWait = Cli.LockWait(p),
            });
            return 0;
        });
        return ExitCode.Ok;
    }
}
