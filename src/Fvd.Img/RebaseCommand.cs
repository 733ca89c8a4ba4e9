// fvd-img rebase [-u] [-p] -b NEW [-F FMT] IMAGE — change the backing without changing what the disk reads.
using System.CommandLine;
using Fvd.Core.Image.ImageOps;

namespace Fvd.Img;

internal sealed class RebaseCommand(Cli cli) : ImgCommand(cli)
{
    protected override string Name => "rebase";
    protected override string Description => "Change the backing file of an image; safe mode copies into the image whatever the new backing reads differently.";

    private readonly Option<string?> _format = CommonOptions.Format();
    private readonly Option<string?> _backing = new("-b", "--backing") { Description = "New backing file (relative to the image's directory); \"\" makes the image standalone", HelpName = "BACKING" };
    private readonly Option<string?> _backingFormat = new("-F", "--backing-format") { Description = "Format of the new backing: raw, qcow2 or fvd (required with a non-empty -b)", HelpName = "FMT" };
    private readonly Option<bool> _unsafe = new("-u") { Description = "Unsafe: only rewrite the reference (the contents must already be equal)" };
    private readonly Option<bool> _progress = CommonOptions.Progress();
    private readonly Argument<string> _image = CommonOptions.Image();

    protected override void Configure(Command c)
    {
        c.Options.Add(_format);
        c.Options.Add(_backing);
        c.Options.Add(_backingFormat);
        c.Options.Add(_unsafe);
        c.Options.Add(_progress);
        c.Arguments.Add(_image);
    }

    protected override int Execute(ParseResult p)
    {
        CommonOptions.RequireFvd(p.GetValue(_format));
        string? backing = p.GetValue(_backing) ?? throw new UsageException("missing -b BACKING (use -b \"\" to make the image standalone)");
        string? fmt = p.GetValue(_backingFormat);
        if (backing.Length > 0 && fmt is null)
            throw new UsageException("backing format not given: specify -F raw, qcow2 or fvd (formats are never probed)");
        if (fmt is not null and not ("raw" or "qcow2" or "fvd"))
            throw new UsageException($"backing format '{fmt}' is not supported (raw, qcow2 or fvd)");
        Cli.WithProgress(p.GetValue(_progress), "Rebasing", progress =>
        {
            Rebaser.Rebase(p.GetValue(_image)!, new RebaseOptions
            {
                Backing = backing,
                BackingFormat = fmt ?? "",
                Unsafe = p.GetValue(_unsafe),
                LockWait = Cli.LockWait(p),
                Progress = progress,
            });
            return 0;
        });
        return ExitCode.Ok;
    }
}
