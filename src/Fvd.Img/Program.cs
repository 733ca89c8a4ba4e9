// fvd-img: create, inspect, check, map and convert FVD images, in the manner of qemu-img.
// Run() is the whole program with its writers passed in, so tests call it in-process.
using System.CommandLine;

namespace Fvd.Img;

public static class Program
{
    public static int Main(string[] args) =>
        Run(args, Console.Out, Console.Error, interactive: !Console.IsOutputRedirected);

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr) => Run(args, stdout, stderr, interactive: false);

    private static readonly string[] Terminating = ["--help", "-h", "-?", "--version"];

    private static int Run(string[] args, TextWriter stdout, TextWriter stderr, bool interactive)
    {
        bool debug = Environment.GetEnvironmentVariable("FVD_DEBUG") == "1" || args.Contains("--debug");
        var cli = new Cli(stdout, stderr, debug, interactive);
        var debugOption = new Option<bool>("--debug")
        {
            Description = "Print stack traces on errors (also FVD_DEBUG=1)",
            Recursive = true,
        };
        var root = new RootCommand("fvd-img: create, inspect, check, map, convert, resize, rebase, commit and compare FVD disk images.")
        {
            new CreateCommand(cli).Build(),
            new InfoCommand(cli).Build(),
            new CheckCommand(cli).Build(),
            new MapCommand(cli).Build(),
            new ConvertCommand(cli).Build(),
            new PrefetchCommand(cli).Build(),
            new DetachCommand(cli).Build(),
            new ProfileCommand(cli).Build(),
            new ResizeCommand(cli).Build(),
            new RebaseCommand(cli).Build(),
            new CommitCommand(cli).Build(),
            new CompareCommand(cli).Build(),
        };
        root.Options.Add(debugOption);
        root.Options.Add(cli.NoWait);
        root.SetAction(_ => cli.Usage(null, "missing command (create, info, check, map, convert, prefetch, detach, profile, resize, rebase, commit or compare)"));

        return cli.Guard("", () =>
        {
            var parsed = root.Parse(args);
            bool terminating = args.Any(a => Terminating.Contains(a));
            if (parsed.Errors.Count > 0 && !terminating)
            {
                string? command = parsed.CommandResult.Command == root ? null : parsed.CommandResult.Command.Name;
                return cli.Usage(command, parsed.Errors[0].Message);
            }
            return parsed.Invoke(new InvocationConfiguration
            {
                Output = stdout,
                Error = stderr,
                EnableDefaultExceptionHandler = false,
            });
        });
    }
}
