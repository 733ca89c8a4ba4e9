// The shared base of every subcommand: writers, exit codes, the error boundary (one line per error, stack
// traces only with FVD_DEBUG=1 or --debug), qemu-style size and -o parsing, and progress output.
using System.CommandLine;
using System.Globalization;
using System.Text.RegularExpressions;
using Fvd.Core;
using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Img;

/// <summary>Exit codes; 2 and 3 are qemu-img check's.</summary>
internal static class ExitCode
{
    public const int Ok = 0;
    public const int Failure = 1;
    public const int Corrupt = 2;
    public const int Repairable = 3;
}

/// <summary>A bad option or argument: printed as one line plus a hint to --help, exit 1.</summary>
internal sealed class UsageException(string message) : Exception(message);

internal sealed partial class Cli(TextWriter stdout, TextWriter stderr, bool debug, bool interactive)
{
    public const string Tool = "fvd-img";
    public TextWriter Out { get; } = stdout;
    public TextWriter Err { get; } = stderr;
    public bool Debug { get; } = debug;
    /// <summary>True when stdout is the process's terminal (Spectre progress bar); false when captured.</summary>
    public bool Interactive { get; } = interactive;

    /// <summary>--no-wait: fail at once when an image is locked, even by a process that is closing it.</summary>
    public Option<bool> NoWait { get; } = new("--no-wait")
    {
        Description = "Do not wait (up to 30 s) for a lock held by a process that is closing the image",
        Recursive = true,
    };

    /// <summary>How commands wait for an image lock; the one-line notice goes to stderr.</summary>
    public LockWait LockWait(ParseResult p) => p.GetValue(NoWait)
        ? Fvd.Core.Io.LockWait.None
        : Fvd.Core.Io.LockWait.Default with { Notice = msg => { Err.WriteLine($"{Tool}: {msg}"); Err.Flush(); } };

    /// <summary>Runs a command body and turns every exception into a message and an exit code.</summary>
    public int Guard(string command, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (UsageException e)
        {
            return Usage(command, e.Message);
        }
        catch (FvdException e)
        {
            Err.WriteLine($"{Tool}: {Describe(e)}");
            if (Debug) Err.WriteLine(e);
            return ExitCode.Failure;
        }
        catch (Exception e)
        {
            Err.WriteLine($"{Tool}: internal error: {e.GetType().Name}: {OneLine(e.Message)}");
            if (Debug) Err.WriteLine(e);
            return ExitCode.Failure;
        }
    }

    public int Usage(string? command, string message)
    {
        Err.WriteLine($"{Tool}: {OneLine(message)}");
        Err.WriteLine($"Try '{Tool}{(command is null ? "" : " " + command)} --help' for more information.");
        return ExitCode.Failure;
    }

    /// <summary>The one-line message for a library error: "FILE: what is wrong", with a hint for some kinds.</summary>
    public static string Describe(FvdException e)
    {
        string hint = e.Kind switch
        {
            FvdErrorKind.Busy => " (is it mounted? stop fvdmount first)",
            FvdErrorKind.NoSpace => " (no space left on the host file system)",
            FvdErrorKind.CorruptImage => "",
            _ => "",
        };
        return OneLine(e.OneLine) + hint;
    }

    public static string OneLine(string s) => WhitespaceRun().Replace(s, " ").Trim();

    [GeneratedRegex(@"\s+")]
    private static partial Regex WhitespaceRun();

    /// <summary>
    /// Runs body with a progress callback when enabled: a Spectre.Console bar on a terminal, else qemu-img's
    /// "    (42.00/100%)" line rewritten in place.
    /// </summary>
    public T WithProgress<T>(bool enabled, string label, Func<Action<long, long>?, T> body)
    {
        if (!enabled) return body(null);
        if (Interactive)
        {
            T result = default!;
            var bar = Spectre.Console.AnsiConsole.Progress();
            bar.AutoClear = false;
            bar.Start(ctx =>
                {
                    var task = ctx.AddTask(label, maxValue: 1);
                    result = body((done, total) =>
                    {
                        task.MaxValue = Math.Max(1, total);
                        task.Value = done;
                    });
                    task.Value = task.MaxValue;
                });
            return result;
        }
        double last = -1;
        void Report(long done, long total)
        {
            double pct = total <= 0 ? 100 : 100.0 * done / total;
            if (pct - last < 1 && pct < 100) return;
            if (pct == last) return;
            last = pct;
            Out.Write(string.Create(CultureInfo.InvariantCulture, $"    ({pct:0.00}/100%)\r"));
        }
        Report(0, 1);
        var r = body(Report);
        Report(1, 1);
        Out.WriteLine();
        return r;
    }
}

/// <summary>Sizes as qemu-img writes and reads them.</summary>
internal static partial class Sizes
{
    [GeneratedRegex(@"^\s*(\d+(?:\.\d+)?)\s*([bBkKmMgGtTpPeE]?)\s*$")]
    private static partial Regex SizeRegex();

    /// <summary>Parses "10G", "512", "1.5M", "4k" (binary units, as qemu-img).</summary>
    public static long Parse(string s, string what)
    {
        var m = SizeRegex().Match(s);
        if (!m.Success)
            throw new UsageException($"invalid {what} '{s}': use a number with an optional K, M, G, T, P or E suffix");
        int shift = char.ToUpperInvariant(m.Groups[2].Value.FirstOrDefault('B')) switch
        {
            'K' => 10, 'M' => 20, 'G' => 30, 'T' => 40, 'P' => 50, 'E' => 60, _ => 0,
        };
        decimal v = decimal.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        decimal bytes = v * (decimal)Math.Pow(2, shift);
        if (bytes > long.MaxValue) throw new UsageException($"{what} '{s}' is too large");
        if (bytes != Math.Floor(bytes)) throw new UsageException($"{what} '{s}' is not a whole number of bytes");
        return (long)bytes;
    }

    /// <summary>qemu's size_to_str: three significant digits and a binary unit ("64 GiB", "1.5 MiB").</summary>
    public static string Human(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1)
        {
            v /= 1024;
            u++;
        }
        string num = v >= 100 ? v.ToString("0", CultureInfo.InvariantCulture)
            : v >= 10 ? v.ToString("0.#", CultureInfo.InvariantCulture)
            : v.ToString("0.##", CultureInfo.InvariantCulture);
        return $"{num} {units[u]}";
    }
}

/// <summary>The -o key=value[,key=value] list shared by create and convert -O fvd.</summary>
internal sealed record ImageOptions
{
    public int? BlockSize { get; init; }
    public string? DataFile { get; init; }
    public bool? InlineData { get; init; }
    public bool? ZeroAware { get; init; }
    public bool? CopyOnRead { get; init; }
    public int? PrefetchDelay { get; init; }
    public string? BackingFile { get; init; }
    public string? BackingFormat { get; init; }

    public const string Help = """
        Supported -o options for fvd:
          block_size=SIZE      block (bitmap granule) size, power of two from 512 to 16M (default: 4K or
                               larger to keep the bitmap at most 4 MiB)
          data_file=NAME       data file name in the image's directory (default: NAME.data)
          inline_data=on|off   keep the data inside the .fvd file after the metadata (default: off)
          zero_aware=on|off    mark all-zero backing blocks local at creation (default: on; off for an
                               http(s) backing, where the scan would download the whole template)
          copy_on_read=on|off  enable copy-on-read by default when the image is opened (default: off; on
                               for an http(s) backing, so each block crosses the network once)
          prefetch_delay=SECS  start whole-image prefetch SECS seconds after open; -1 = never (default)
          backing_file=PATH    same as -b (create only)
          backing_fmt=FMT      same as -F (create only)
        """;

    public static bool IsHelp(IEnumerable<string>? lists) => lists?.Any(l => l.Split(',').Contains("help")) == true;

    public static ImageOptions Parse(IEnumerable<string>? lists, bool allowBacking)
    {
        var o = new ImageOptions();
        foreach (var list in lists ?? [])
        {
            foreach (var item in list.Split(',', StringSplitOptions.RemoveEmptyEntries))
            {
                int eq = item.IndexOf('=');
                if (eq <= 0) throw new UsageException($"invalid -o option '{item}': expected key=value (see -o help)");
                string key = item[..eq].Trim(), val = item[(eq + 1)..].Trim();
                o = key switch
                {
                    "block_size" or "cluster_size" => o with { BlockSize = BlockSizeValue(val) },
                    "data_file" => o with { DataFile = val.Length > 0 ? val : throw new UsageException("data_file must not be empty") },
                    "inline_data" => o with { InlineData = Bool(key, val) },
                    "zero_aware" => o with { ZeroAware = Bool(key, val) },
                    "copy_on_read" => o with { CopyOnRead = Bool(key, val) },
                    "prefetch_delay" => o with { PrefetchDelay = Delay(val) },
                    "backing_file" when allowBacking => o with { BackingFile = val },
                    "backing_fmt" when allowBacking => o with { BackingFormat = val },
                    _ => throw new UsageException($"invalid -o option '{key}' (see -o help)"),
                };
            }
        }
        if (o.InlineData == true && o.DataFile is not null)
            throw new UsageException("data_file and inline_data=on exclude each other");
        return o;
    }

    /// <summary>Applies these options to creation options.</summary>
    public FvdCreateOptions Apply(FvdCreateOptions c) => c with
    {
        BlockSize = BlockSize ?? c.BlockSize,
        DataFile = DataFile ?? c.DataFile,
        InlineData = InlineData ?? c.InlineData,
        ZeroAware = ZeroAware ?? c.ZeroAware,
        CopyOnRead = CopyOnRead ?? c.CopyOnRead,
        Prefetch = PrefetchDelay is int d ? c.Prefetch with { StartDelaySeconds = d } : c.Prefetch,
    };

    private static int BlockSizeValue(string v)
    {
        long n = Sizes.Parse(v, "block_size");
        if (n < 512 || n > 16 << 20 || (n & (n - 1)) != 0)
            throw new UsageException($"block_size {v} must be a power of two from 512 to 16M");
        return (int)n;
    }

    private static bool Bool(string key, string v) => v.ToLowerInvariant() switch
    {
        "on" or "true" or "yes" or "1" => true,
        "off" or "false" or "no" or "0" => false,
        _ => throw new UsageException($"{key} must be on or off, not '{v}'"),
    };

    private static int Delay(string v)
    {
        if (v is "never") return -1;
        if (!int.TryParse(v, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int d) || d < -1)
            throw new UsageException($"prefetch_delay must be a number of seconds or -1 (never), not '{v}'");
        return d;
    }
}

/// <summary>Options several commands share, built once here so they read the same everywhere.</summary>
internal static class CommonOptions
{
    public static Option<string> Output() => new Option<string>("--output")
    {
        Description = "Output format: human or json",
        DefaultValueFactory = _ => "human",
        HelpName = "human|json",
    }.AcceptOnlyFromAmong("human", "json");

    public static Option<string?> Format(string description = "Image format (only fvd)") =>
        new("-f", "--format") { Description = description, HelpName = "FMT" };

    public static Option<bool> Progress() => new("-p", "--progress") { Description = "Show progress" };

    public static Argument<string> Image(string name = "IMAGE") => new(name) { Description = "The FVD image (NAME.fvd)" };

    /// <summary>Checks -f for commands that only read FVD images.</summary>
    public static void RequireFvd(string? format)
    {
        if (format is not null and not "fvd")
            throw new UsageException($"format '{format}' is not supported here (only fvd)");
    }
}
