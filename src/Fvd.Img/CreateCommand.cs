// fvd-img create [-b BACKING -F FMT] [-o OPTS] [-p] NAME.fvd [SIZE]
using System.CommandLine;
using Fvd.Core;
using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Img;

internal sealed class CreateCommand(Cli cli) : ImgCommand(cli)
{
    protected override string Name => "create";
    protected override string Description => "Create an FVD image, optionally over a raw, qcow2 or fvd backing (template) image.";

    private readonly Option<string?> _format = CommonOptions.Format("Image format to create (only fvd)");
    private readonly Option<string?> _backing = new("-b", "--backing") { Description = "Backing (template) image; relative paths resolve against the new image's directory", HelpName = "BACKING" };
    private readonly Option<string?> _backingFormat = new("-F", "--backing-format") { Description = "Format of the backing image (required with -b): raw, qcow2 or fvd", HelpName = "FMT" };
    private readonly Option<string[]> _options = new("-o", "--options") { Description = "Comma-separated key=value options; -o help lists them", HelpName = "OPTS" };
    private readonly Option<bool> _progress = CommonOptions.Progress();
    private readonly Option<bool> _quiet = new("-q", "--quiet") { Description = "Do not print the 'Formatting' line" };
    private readonly Argument<string> _name = new("NAME") { Description = "The image to create (NAME.fvd)" };
    private readonly Argument<string?> _size = new("SIZE") { Description = "Virtual size with optional K/M/G/T suffix (default: the backing's size)", Arity = ArgumentArity.ZeroOrOne };

    protected override void Configure(Command c)
    {
        c.Options.Add(_format);
        c.Options.Add(_backing);
        c.Options.Add(_backingFormat);
        c.Options.Add(_options);
        c.Options.Add(_progress);
        c.Options.Add(_quiet);
        c.Arguments.Add(_name);
        c.Arguments.Add(_size);
    }

    protected override int Execute(ParseResult p)
    {
        var lists = p.GetValue(_options);
        if (ImageOptions.IsHelp(lists))
        {
            Cli.Out.WriteLine(ImageOptions.Help);
            return ExitCode.Ok;
        }
        CommonOptions.RequireFvd(p.GetValue(_format));
        var opts = ImageOptions.Parse(lists, allowBacking: true);
        string name = p.GetValue(_name)!;
        string? backing = p.GetValue(_backing) ?? opts.BackingFile;
        string? backingFormat = p.GetValue(_backingFormat) ?? opts.BackingFormat;
        string? sizeText = p.GetValue(_size);

        if (backing is not null && backingFormat is null)
            throw new UsageException("backing format not given: specify -F raw, qcow2 or fvd (formats are never probed)");
        if (backing is null && backingFormat is not null)
            throw new UsageException("-F needs a backing image (-b)");
        if (backingFormat is not null and not ("raw" or "qcow2" or "fvd"))
            throw new UsageException($"backing format '{backingFormat}' is not supported (raw, qcow2 or fvd)");

        long backingLength = 0;
        if (backing is not null)
        {
            backingLength = FvdImage.BackingLength(name, backing, backingFormat!);
        }
        long size;
        if (sizeText is not null)
        {
            size = Sizes.Parse(sizeText, "image size");
            if (size <= 0) throw new UsageException($"image size '{sizeText}' must be positive");
        }
        else if (backing is not null)
        {
            size = backingLength;
            if (size <= 0) throw new FvdException(FvdErrorKind.InvalidArgument, "backing file is empty; give a SIZE", backing);
        }
        else throw new UsageException("image size missing (give SIZE, or -b BACKING to use its size)");

        var create = opts.Apply(new FvdCreateOptions
        {
            VirtualSize = size,
            BackingFile = backing,
            BackingFormat = backingFormat ?? "raw",
        });
        long vsize = (size + 511) / 512 * 512;
        int blockSize = create.BlockSize != 0 ? create.BlockSize : FvdImage.DefaultBlockSize(Math.Max(Math.Min(backingLength, vsize), 1));
        if (!p.GetValue(_quiet))
        {
            var line = $"Formatting '{name}', fmt=fvd size={vsize}";
            if (backing is not null) line += $" backing_file={backing} backing_fmt={backingFormat}";
            line += $" block_size={blockSize}";
            line += create.InlineData ? " inline_data=on" : $" data_file={create.DataFile ?? Path.GetFileNameWithoutExtension(name) + ".data"} inline_data=off";
            bool remote = backing is not null && HttpRangeDevice.IsUrl(backing);
            if (backing is not null) line += $" zero_aware={(create.ZeroAware ?? !remote ? "on" : "off")}";
            line += $" copy_on_read={(create.CopyOnRead ?? remote ? "on" : "off")}";
            if (create.Prefetch.StartDelaySeconds >= 0) line += $" prefetch_delay={create.Prefetch.StartDelaySeconds}";
            Cli.Out.WriteLine(line);
        }
        Cli.WithProgress(p.GetValue(_progress) && backing is not null, "Scanning backing", progress =>
        {
            FvdImage.Create(name, create with { Progress = progress });
            return 0;
        });
        return ExitCode.Ok;
    }
}
