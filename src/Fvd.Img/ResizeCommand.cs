// fvd-img resize [--shrink] [--force] IMAGE [+|-]SIZE — as qemu-img resize; growing adds local (free-write) space.
using System.CommandLine;
using Fvd.Core.Image;
using Fvd.Core.Image.ImageOps;

namespace Fvd.Img;

internal sealed class ResizeCommand(Cli cli) : ImgCommand(cli)
{
    protected override string Name => "resize";
    protected override string Description => "Change the virtual size of an image (not while it is in use); shrinking needs --shrink.";

    private readonly Option<string?> _format = CommonOptions.Format();
    private readonly Option<bool> _shrink = new("--shrink") { Description = "Allow a smaller size (data past the new end must be unwritten)" };
    private readonly Option<bool> _force = new("--force") { Description = "With --shrink: cut even data the disk holds past the new end" };
    private readonly Option<bool> _quiet = new("-q", "--quiet") { Description = "Do not print 'Image resized.'" };
    private readonly Argument<string> _image = CommonOptions.Image();
    private readonly Argument<string> _size = new("SIZE") { Description = "New size, or +SIZE / -SIZE relative to the current one (write -- before a negative size)" };

    protected override void Configure(Command c)
    {
        c.Options.Add(_format);
        c.Options.Add(_shrink);
        c.Options.Add(_force);
        c.Options.Add(_quiet);
        c.Arguments.Add(_image);
        c.Arguments.Add(_size);
    }

    protected override int Execute(ParseResult p)
    {
        CommonOptions.RequireFvd(p.GetValue(_format));
        string path = p.GetValue(_image)!;
        string text = p.GetValue(_size)!;
        long size;
        if (text.StartsWith('+') || text.StartsWith('-'))
        {
            long delta = Sizes.Parse(text[1..], "size");
            long current = ImageInfo.Read(path).VirtualSize;
            size = text[0] == '+' ? current + delta : current - delta;
            if (size <= 0) throw new UsageException($"new size {size} must be positive");
        }
        else
        {
            size = Sizes.Parse(text, "size");
            if (size <= 0) throw new UsageException($"size '{text}' must be positive");
        }
        Resizer.Resize(path, size, new ResizeOptions { Shrink = p.GetValue(_shrink), Force = p.GetValue(_force), LockWait = Cli.LockWait(p) });
        if (!p.GetValue(_quiet)) Cli.Out.WriteLine("Image resized.");
        return ExitCode.Ok;
    }
}
