// fvd-img profile record IMAGE LOG | profile show IMAGE | profile clear IMAGE — the prefetch profile
// (paper 3.4.1): the backing ranges a typical boot reads, fetched first by prefetch.
// LOG: one read per line, "OFFSET LENGTH" in bytes (decimal or 0x hex), '#' starts a comment; for example
// the read trace fvdmount writes with -o record_profile, or an access log from blktrace.
using System.CommandLine;
using System.Globalization;
using Fvd.Core;
using Fvd.Core.Image;

namespace Fvd.Img;

internal sealed class ProfileCommand(Cli cli) : ImgCommand(cli)
{
    protected override string Name => "profile";
    protected override string Description => "Record, show or clear the prefetch profile stored in an image.";

    private readonly Argument<string> _action = new("ACTION") { Description = "record, show or clear" };
    private readonly Argument<string> _image = CommonOptions.Image();
    private readonly Argument<string?> _log = new("LOG") { Description = "With record: the read log (OFFSET LENGTH per line)", Arity = ArgumentArity.ZeroOrOne };
    private readonly Option<string> _output = CommonOptions.Output();

    protected override void Configure(Command c)
    {
        c.Arguments.Add(_action);
        c.Arguments.Add(_image);
        c.Arguments.Add(_log);
        c.Options.Add(_output);
    }

    protected override int Execute(ParseResult p)
    {
        string path = p.GetValue(_image)!;
        switch (p.GetValue(_action))
        {
            case "show":
            {
                using var img = FvdImage.Open(path, new FvdOpenOptions { ReadOnly = true, NoLock = true, AllowMissingBacking = true });
                var entries = img.PrefetchProfileEntries;
                if (p.GetValue(_output) == "json")
                    Cli.Out.WriteLine("[" + string.Join(",\n", entries.Select(e => $"{{ \"offset\": {e.Offset}, \"length\": {e.Length} }}")) + "]");
                else
                {
                    Cli.Out.WriteLine($"{entries.Count} ranges, {entries.Sum(e => e.Length)} bytes");
                    foreach (var (o, l) in entries) Cli.Out.WriteLine($"0x{o:x} 0x{l:x}");
                }
                return ExitCode.Ok;
            }
            case "record":
            {
                string log = p.GetValue(_log) ?? throw new UsageException("profile record needs a LOG file");
                var reads = ReadLog(log);
                using var img = FvdImage.Open(path, new FvdOpenOptions { LockWait = Cli.LockWait(p) });
                var profile = img.BuildProfile(reads);
                img.WriteProfile(profile);
                Cli.Out.WriteLine($"{path}: stored a prefetch profile of {profile.Count} ranges ({profile.Sum(e => e.Length)} bytes) from {reads.Count} reads");
                return ExitCode.Ok;
            }
            case "clear":
            {
                using var img = FvdImage.Open(path, new FvdOpenOptions { LockWait = Cli.LockWait(p) });
                img.WriteProfile(Array.Empty<(long, long)>());
                Cli.Out.WriteLine($"{path}: prefetch profile cleared");
                return ExitCode.Ok;
            }
            default:
                throw new UsageException($"unknown profile action '{p.GetValue(_action)}' (record, show or clear)");
        }
    }

    private static List<(long, long)> ReadLog(string log)
    {
        if (!File.Exists(log)) throw new FvdException(FvdErrorKind.NotFound, "read log not found", log);
        var reads = new List<(long, long)>();
        int n = 0;
        foreach (var raw in File.ReadLines(log))
        {
            n++;
            var line = raw.Split('#')[0].Trim();
            if (line.Length == 0) continue;
            var parts = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length != 2 || !TryNumber(parts[0], out long off) || !TryNumber(parts[1], out long len) || off < 0 || len <= 0)
                throw new FvdException(FvdErrorKind.InvalidArgument, $"line {n}: expected 'OFFSET LENGTH' in bytes", log);
            reads.Add((off, len));
        }
        return reads;
    }

    private static bool TryNumber(string s, out long v) =>
        s.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? long.TryParse(s.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out v)
            : long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out v);
}
