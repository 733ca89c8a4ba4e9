// Base of the subcommands: each declares its options and a body; the base wires the action through the
// shared error boundary so no command has its own copy of it.
using System.CommandLine;

namespace Fvd.Img;

internal abstract class ImgCommand(Cli cli)
{
    protected Cli Cli { get; } = cli;
    protected abstract string Name { get; }
    protected abstract string Description { get; }

    /// <summary>Adds options and arguments.</summary>
    protected abstract void Configure(Command command);

    /// <summary>Runs the command; returns the exit code. Throw UsageException for bad arguments.</summary>
    protected abstract int Execute(ParseResult p);

    public Command Build()
    {
        var c = new Command(Name, Description);
        Configure(c);
        c.SetAction(p => Cli.Guard(Name, () => Execute(p)));
        return c;
    }
}

/// <summary>
/// Base of the inspection commands (info, map): [--output=human|json] [-f fvd] IMAGE, opened without the
/// image lock so they work while fvdmount serves the image.
/// </summary>
internal abstract class InspectCommand(Cli cli) : ImgCommand(cli)
{
    private readonly Option<string> _output = CommonOptions.Output();
    private readonly Option<string?> _format = CommonOptions.Format();
    private readonly Argument<string> _image = CommonOptions.Image();

    protected override void Configure(Command c)
    {
        c.Options.Add(_output);
        c.Options.Add(_format);
        c.Arguments.Add(_image);
    }

    protected override int Execute(ParseResult p)
    {
        string? format = p.GetValue(_format);
        if (!(AcceptsQcow2 && format == "qcow2")) CommonOptions.RequireFvd(format);
        return Inspect(p.GetValue(_image)!, json: p.GetValue(_output) == "json");
    }

    protected abstract int Inspect(string path, bool json);

    /// <summary>True when the command also reads qcow2 files (-f qcow2, or found by magic).</summary>
    protected virtual bool AcceptsQcow2 => false;
}
