// Adaptive prefetch against a real bottleneck (paper 3.4.2, Fig. 14): nginx serves the template inside a
// network namespace whose loopback is limited with tc (token bucket, 40 Mbit/s). fvd-img prefetch
// --adaptive runs in the namespace; when curl processes load the same link, prefetch must pause within
// 3 seconds, and run again after the load ends. Eight long curl streams share the link with prefetch's
// short range requests; measured here: ~4.5 MiB/s alone, ~1.4 MiB/s under that load.
using System.Collections.Concurrent;
using System.Diagnostics;
using Fvd.Core.Tests;

namespace Fvd.Integration.Tests;

[Collection("Timing")]
public sealed class PrefetchContentionTests : IDisposable
{
    private readonly string _ns = $"fvdt{Environment.ProcessId}";
    private readonly TempDir _dir = new();

    public PrefetchContentionTests()
    {
        Sh("ip", $"netns add {_ns}");
        Sh("ip", $"netns exec {_ns} ip link set lo up");
        // tbf drops packets larger than its burst: keep loopback's 64 KiB MTU out of the way.
        Sh("ip", $"netns exec {_ns} ip link set lo mtu 1500");
        Sh("ip", $"netns exec {_ns} tc qdisc add dev lo root tbf rate 40mbit burst 32kb latency 100ms");
    }

    public void Dispose()
    {
        try { Sh("ip", $"netns del {_ns}"); } catch (InvalidOperationException) { }
        _dir.Dispose();
    }

    private static void Sh(string file, string args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true, UseShellExecute = false })!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {args}: {err.Trim()}");
    }

    [Fact]
    public void Prefetch_pauses_under_load_and_resumes_after()
    {
        using var web = new NginxServer(netns: _ns);
        var tpl = new byte[160 << 20];
        new Random(5).NextBytes(tpl);
        File.WriteAllBytes(Path.Combine(web.Root, "tpl.raw"), tpl);
        File.WriteAllBytes(Path.Combine(web.Root, "load.raw"), tpl.AsSpan(0, 64 << 20).ToArray());
        string exe = Path.Combine(AppContext.BaseDirectory, "fvd-img");
        string img = _dir.File("vm.fvd");
        Sh("ip", $"netns exec {_ns} {exe} create -q -b {web.Url("tpl.raw")} -F raw -o copy_on_read=off {img} 256M");

        var events = new ConcurrentQueue<(double T, string State)>();
        var clock = Stopwatch.StartNew();
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "netns", "exec", _ns, exe, "prefetch", "--adaptive", "--events", "--chunk", "256K", "--min-read", "3M", "--throttle", "1500", img })
            psi.ArgumentList.Add(a);
        using var prefetch = Process.Start(psi)!;
        prefetch.OutputDataReceived += (_, e) =>
        {
            if (e.Data is { } line && line.Contains("state="))
                events.Enqueue((clock.Elapsed.TotalSeconds, line.Split("state=")[1].Split(' ')[0]));
        };
        prefetch.BeginOutputReadLine();
        var load = new List<Process>();
        try
        {
            WaitFor(() => events.Any(e => e.State == "running"), 20, "prefetch never started running");
            Thread.Sleep(2000);
            Assert.DoesNotContain(events, e => e.State == "paused"); // alone on the link it gets ~4.5 MiB/s > 3 MiB/s

            for (int i = 0; i < 8; i++)
                load.Add(Process.Start(new ProcessStartInfo("ip", $"netns exec {_ns} sh -c \"while true; do curl -s -o /dev/null {web.Url("load.raw")}; done\"") { UseShellExecute = false })!);
            // The load starts when its connections exist (process start-up is slow on a busy machine).
            WaitFor(() => ServerConnections() >= 9, 20, "the load's connections never appeared");
            double loadStart = clock.Elapsed.TotalSeconds;
            WaitFor(() => events.Any(e => e.State == "paused" && e.T >= loadStart), 3,
                $"prefetch did not pause within 3 s of the load starting at {loadStart:F1}; events: {string.Join(", ", events.Select(e => $"{e.T:F1}:{e.State}"))}");
            double pausedAt = events.First(e => e.State == "paused" && e.T >= loadStart).T;
            Thread.Sleep(3000);
            foreach (var p in load) p.Kill(entireProcessTree: true);
            try { Sh("ip", $"netns exec {_ns} pkill -f load.raw"); } catch (InvalidOperationException) { } // none left
            double loadEnd = clock.Elapsed.TotalSeconds;
            // After the load: the current pause (at most the 1.5 s throttle) ends and prefetch runs on.
            Thread.Sleep(5000);
            var after = events.Where(e => e.T > loadEnd).ToList();
            Assert.True(after.Any(e => e.State == "running") || (events.Last().State == "running" && events.Last().T > pausedAt),
                $"prefetch did not resume after the load ended; events: {string.Join(", ", events.Select(e => $"{e.T:F1}:{e.State}"))}");
            Assert.Equal("running", events.Last().State);
        }
        finally
        {
            foreach (var p in load) { try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } }
            if (!prefetch.HasExited) prefetch.Kill(entireProcessTree: true);
            prefetch.WaitForExit();
            web.Stop();
        }
    }

    /// <summary>Established TCP connections to nginx inside the namespace.</summary>
    private int ServerConnections()
    {
        var psi = new ProcessStartInfo("ip", $"netns exec {_ns} ss -Htn state established ( sport = :8080 )") { RedirectStandardOutput = true, UseShellExecute = false };
        using var p = Process.Start(psi)!;
        string o = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return o.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length;
    }

    private static void WaitFor(Func<bool> cond, double seconds, string message)
    {
        var sw = Stopwatch.StartNew();
        while (!cond())
        {
            if (sw.Elapsed.TotalSeconds > seconds) Assert.Fail(message);
            Thread.Sleep(20);
        }
    }
}
