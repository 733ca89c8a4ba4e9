// fvd-img commit [-d] [-p] [-q] IMAGE — write the image's own blocks into its backing, then empty it.
using System.CommandLine;
using Fvd.Core.Image.ImageOps;

namespace Fvd.Img;

internal sealed class CommitCommand(Cli cli) : ImgCommand(cli)
{
    protected override string Name => "commit";
    protected override string Description => "Write the image's local blocks into its raw or fvd backing, then empty the image (as qemu-img commit).";

    private readonly Option<string?> _format = CommonOptions.Format();
    private readonly Option<bool> _keep = new("-d") { Description = "Do not empty the image after the commit" };
    private readonly Option<bool> _progress = CommonOptions.Progress();
    private readonly Option<bool> _quiet = new("-q", "--quiet") { Description = "Do not print 'Image committed.'" };
    private readonly Argument<string> _image = CommonOptions.Image();

    protected override void Configure(Command c)
    {
        c.Options.Add(_format);
        c.Options.Add(_keep);
        c.Options.Add(_progress);
        c.Options.Add(_quiet);
        c.Arguments.Add(_image);
    }

    protected override int Execute(ParseResult p)
    {
        CommonOptions.RequireFvd(p.GetValue(_format));
        Cli.WithProgress(p.GetValue(_progress), "Committing", progress =>
        {
            Committer.Commit(p.GetValue(_image)!, new CommitOptions { KeepImage = p.GetValue(_keep), LockWait = Cli.LockWait(p), Progress = progress });
            return 0;
        });
        if (!p.GetValue(_quiet)) Cli.Out.WriteLine("Image committed.");
        return ExitCode.Ok;
    }
}
