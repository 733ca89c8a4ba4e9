// fvd-img detach IMAGE — drop the backing reference of an image whose blocks are all local.
using System.CommandLine;
using Fvd.Core.Image;

namespace Fvd.Img;

internal sealed class DetachCommand(Cli cli) : ImgCommand(cli)
{
    protected override string Name => "detach";
    protected override string Description => "Drop the backing reference of a fully prefetched image (refused while any block lives in the backing).";

    private readonly Argument<string> _image = CommonOptions.Image();

    protected override void Configure(Command c) => c.Arguments.Add(_image);

    protected override int Execute(ParseResult p)
    {
        string path = p.GetValue(_image)!;
        FvdImage.Detach(path, Cli.LockWait(p));
        Cli.Out.WriteLine($"{path}: no longer depends on a backing file");
        return ExitCode.Ok;
    }
}
