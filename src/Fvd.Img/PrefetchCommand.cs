// fvd-img prefetch [-p] [--max-read RATE] [--max-write RATE] IMAGE — copy every block still in the backing
// into the image now (an operator's offline prefetch), then mark it finished (paper 3.3.5).
using System.CommandLine;
using Fvd.Core.Image;

namespace Fvd.Img;

internal sealed class PrefetchCommand(Cli cli) : ImgCommand(cli)
{
    protected override string Name => "prefetch";
    protected override string Description => "Copy every block still in the backing into the image; afterwards the data file is a plain RAW image.";

    private readonly Option<bool> _progress = CommonOptions.Progress();
    private readonly Option<string?> _maxRead = new("--max-read") { Description = "Upper read rate (e.g. 50M = 50 MiB/s); default: unlimited" };
    private readonly Option<string?> _maxWrite = new("--max-write") { Description = "Upper write rate; default: unlimited" };
    private readonly Option<bool> _adaptive = new("--adaptive") { Description = "Back off when the storage is busy, as the daemon does (the image's lower limits)" };
    private readonly Option<string?> _minRead = new("--min-read") { Description = "With --adaptive: lower read rate below which prefetch backs off" };
    private readonly Option<int?> _throttle = new("--throttle") { Description = "With --adaptive: longest random pause in ms" };
    private readonly Option<string?> _chunk = new("--chunk") { Description = "Bytes per prefetch read (a multiple of the block size)" };
    private readonly Option<bool> _events = new("--events") { Description = "Print a status line when the prefetch state changes and every second" };
    private readonly Argument<string> _image = CommonOptions.Image();

    protected override void Configure(Command c)
    {
        c.Options.Add(_progress);
        c.Options.Add(_maxRead);
        c.Options.Add(_maxWrite);
        c.Options.Add(_adaptive);
        c.Options.Add(_minRead);
        c.Options.Add(_throttle);
        c.Options.Add(_chunk);
        c.Options.Add(_events);
        c.Arguments.Add(_image);
    }

    private static int KiBps(string? rate, string what)
    {
        if (rate is null) return 0;
        long bytes = Sizes.Parse(rate, what);
        return (int)Math.Clamp(bytes / 1024, 1, int.MaxValue);
    }

    protected override int Execute(ParseResult p)
    {
        string path = p.GetValue(_image)!;
        int maxRead = KiBps(p.GetValue(_maxRead), "--max-read");
        int maxWrite = KiBps(p.GetValue(_maxWrite), "--max-write");
        using var img = FvdImage.Open(path, new FvdOpenOptions { LockWait = Cli.LockWait(p) });
        if (!img.Header.HasBacking)
        {
            Cli.Out.WriteLine($"{path}: no backing file; nothing to prefetch");
            return ExitCode.Ok;
        }
        // An operator asked for it: by default no back-off on contention (lower limits 0), only the given
        // upper limits; --adaptive keeps the image's lower limits (or --min-read) and backs off like the daemon.
        bool adaptive = p.GetValue(_adaptive);
        var limits = img.Header.Prefetch with { MaxReadKiBps = maxRead, MaxWriteKiBps = maxWrite };
        if (!adaptive) limits = limits with { MinReadKiBps = 0, MinWriteKiBps = 0 };
        else if (p.GetValue(_minRead) is string mr) limits = limits with { MinReadKiBps = KiBps(mr, "--min-read") };
        if (p.GetValue(_throttle) is int t)
            limits = limits with { ThrottleMs = t >= 1 ? t : throw new UsageException("--throttle must be at least 1 ms") };
        if (p.GetValue(_chunk) is string ch)
        {
            long c = Sizes.Parse(ch, "--chunk");
            if (c % img.BlockSize != 0 || c > 64 << 20 || c <= 0) throw new UsageException($"--chunk must be a multiple of the block size ({img.BlockSize}) up to 64M");
            limits = limits with { ChunkBytes = (int)c };
        }
        var sw = System.Diagnostics.Stopwatch.StartNew();
        PrefetchState? last = null;
        double lastLine = 0;
        Action<ImageStatus>? events = !p.GetValue(_events) ? null : s =>
        {
            // A line on every state change, and once a second while nothing changes.
            if (s.Prefetch == last && sw.Elapsed.TotalSeconds - lastLine < 1) return;
            last = s.Prefetch;
            lastLine = sw.Elapsed.TotalSeconds;
            Cli.Out.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"t={sw.Elapsed.TotalSeconds:F2} state={s.Prefetch.ToString().ToLowerInvariant()} rate={s.PrefetchRate / 1048576:F2}MiB/s local={s.BlocksLocal}/{s.BlocksTotal}"));
            Cli.Out.Flush();
        };
        Cli.WithProgress(p.GetValue(_progress), "Prefetching", progress =>
        {
            img.PrefetchNow(limits, progress, onStatus: events);
            return 0;
        });
        var s = img.Status;
        Cli.Out.WriteLine($"prefetch finished: {s.BlocksLocal}/{s.BlocksTotal} blocks local, {s.BackingBytesRead} bytes read from the backing");
        Cli.Out.WriteLine($"the data file {img.DataPath} is now a plain RAW image; 'fvd-img detach {path}' drops the backing reference");
        return ExitCode.Ok;
    }
}
