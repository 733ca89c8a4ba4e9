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
