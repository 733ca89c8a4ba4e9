// fvd-img check [-r leaks|all] [--output=human|json] IMAGE — exit 0 clean, 1 could not check,
// 2 corruption, 3 repairable issues left (qemu-img check's codes).
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Fvd.Core.Image;

namespace Fvd.Img;

internal sealed class CheckCommand(Cli cli) : ImgCommand(cli)
{
    protected override string Name => "check";
    protected override string Description => "Check an image for consistency; -r repairs what can be repaired.";

    private readonly Option<string> _output = CommonOptions.Output();
    private readonly Option<string?> _format = CommonOptions.Format();
    private readonly Option<bool> _progress = CommonOptions.Progress();
    private readonly Option<string?> _repair = new Option<string?>("-r", "--repair")
    {
        Description = "Repair: leaks (short data file, clean flag) or all (also stray bitmap bits, a stale corrupt mark)",
        HelpName = "leaks|all",
    }.AcceptOnlyFromAmong("leaks", "all");
    private readonly Argument<string> _image = CommonOptions.Image();

    protected override void Configure(Command c)
    {
        c.Options.Add(_repair);
        c.Options.Add(_output);
        c.Options.Add(_format);
        c.Options.Add(_progress);
        c.Arguments.Add(_image);
    }

    protected override int Execute(ParseResult p)
    {
        CommonOptions.RequireFvd(p.GetValue(_format));
        string path = p.GetValue(_image)!;
        var mode = p.GetValue(_repair) switch { "leaks" => RepairMode.Leaks, "all" => RepairMode.All, _ => RepairMode.None };
        bool json = p.GetValue(_output) == "json";

        var first = Cli.WithProgress(p.GetValue(_progress), "Checking", progress => ImageChecker.Check(path, mode, progress, Cli.LockWait(p)));
        var final = first;
        if (mode != RepairMode.None && first.Fixed > 0)
        {
            final = ImageChecker.Check(path, wait: Cli.LockWait(p)); // double-check the repaired image, as qemu-img does
            if (!json)
            {
                int leaks = first.Messages.Count(m => m.Fixed && m.Severity == CheckSeverity.Repairable);
                int errors = first.Messages.Count(m => m.Fixed && m.Severity == CheckSeverity.Error);
                Cli.Out.WriteLine("The following inconsistencies were found and repaired:");
                Cli.Out.WriteLine();
                foreach (var m in first.Messages.Where(m => m.Fixed)) Cli.Out.WriteLine($"    {m.Text}");
                Cli.Out.WriteLine();
                Cli.Out.WriteLine($"    {leaks} leaks, {errors} corruptions repaired");
                Cli.Out.WriteLine();
                Cli.Out.WriteLine("Double checking the fixed image now...");
            }
        }

        foreach (var m in final.Messages.Where(m => m.Severity == CheckSeverity.CheckFailed))
            Cli.Err.WriteLine($"{Cli.Tool}: {path}: {Cli.OneLine(m.Text)}");
        if (json) WriteJson(first, final);
        else WriteHuman(final);
        return final.ExitCode;
    }

    private void WriteHuman(CheckReport r)
    {
        var o = Cli.Out;
        foreach (var m in r.Messages)
        {
            string tag = m.Severity switch
            {
                CheckSeverity.Error => "ERROR",
                CheckSeverity.Repairable => "Leak",
                CheckSeverity.Info => "Info",
                _ => null!,
            };
            if (tag is not null) o.WriteLine($"{tag}: {Cli.OneLine(m.Text)}");
        }
        if (r.CheckFailed) return;
        if (r.Errors > 0)
        {
            o.WriteLine();
            o.WriteLine($"{r.Errors} errors were found on the image.");
            o.WriteLine("Data may be corrupted, or further writes to the image may corrupt it.");
        }
        if (r.Repairable > 0)
        {
            o.WriteLine();
            o.WriteLine($"{r.Repairable} repairable issues were found on the image.");
            o.WriteLine("No data is lost; run 'fvd-img check -r leaks' to repair them.");
        }
        if (r.Errors == 0 && r.Repairable == 0) o.WriteLine("No errors were found on the image.");
        if (r.BlocksTotal > 0)
        {
            double pct = 100.0 * r.BlocksLocal / r.BlocksTotal;
            o.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.BlocksLocal}/{r.BlocksTotal} = {pct:0.00}% blocks local (the rest read from the backing)"));
        }
    }

    private void WriteJson(CheckReport first, CheckReport r)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("filename", r.Path);
            w.WriteString("format", "fvd");
            w.WriteNumber("check-errors", r.Messages.Count(m => m.Severity == CheckSeverity.CheckFailed));
            w.WriteNumber("corruptions", r.Errors);
            w.WriteNumber("leaks", r.Repairable);
            w.WriteNumber("corruptions-fixed", ReferenceEquals(first, r) ? 0 : first.Messages.Count(m => m.Fixed && m.Severity == CheckSeverity.Error));
            w.WriteNumber("leaks-fixed", ReferenceEquals(first, r) ? 0 : first.Messages.Count(m => m.Fixed && m.Severity == CheckSeverity.Repairable));
            w.WriteNumber("total-clusters", r.BlocksTotal);
            w.WriteNumber("allocated-clusters", r.BlocksLocal);
            w.WriteNumber("exit-code", r.ExitCode);
            w.WriteStartArray("messages");
            foreach (var m in first.Messages.Concat(ReferenceEquals(first, r) ? [] : r.Messages))
            {
                w.WriteStartObject();
                w.WriteString("severity", m.Severity switch
                {
                    CheckSeverity.Error => "corruption",
                    CheckSeverity.Repairable => "leak",
                    CheckSeverity.CheckFailed => "check-error",
                    _ => "info",
                });
                w.WriteString("message", m.Text);
                w.WriteBoolean("fixed", m.Fixed);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        Cli.Out.WriteLine(System.Text.Encoding.UTF8.GetString(ms.ToArray()));
    }
}
