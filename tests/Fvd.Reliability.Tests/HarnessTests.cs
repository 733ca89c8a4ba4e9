// Small runs of each reliability harness (0 failures expected) and planted-bug runs (failures expected),
// which prove each harness can catch the class of bug it is for. The full figures: tests/reliability.sh.
using Fvd.Reliability;

namespace Fvd.Reliability.Tests;

public class CrashStateTests
{
    [Fact]
    public void Small_run_finds_no_failures()
    {
        var r = new CrashStateHarness().Run(seed: 1, workloads: 6);
        Assert.True(r.Failed == 0, string.Join("\n", r.Failures));
        Assert.True(r.Passed > 300, r.Line);
    }

    [Fact]
    public void Planted_swallowed_data_flush_is_caught()
    {
        // The data device's Flush does nothing, so bitmap bits reach the metadata before their data is durable.
        var r = new CrashStateHarness { PlantSwallowDataFlush = true }.Run(seed: 1, workloads: 6);
        Assert.True(r.Failed > 0, r.Line);
        Assert.Contains(r.Failures, f => f.Contains("before the data write", StringComparison.Ordinal));
        Assert.Contains(r.Failures, f => f.Contains("lost write", StringComparison.Ordinal) || f.Contains("garbage", StringComparison.Ordinal));
    }
}

public class RaceSimulatorTests
{
    [Fact]
    public void Small_run_with_error_injection_finds_no_failures()
    {
        var r = new RaceSimulator { Requests = 400, FailProbability = 0.03 }.Run(seed: 1, seeds: 6);
        Assert.True(r.Failed == 0, string.Join("\n", r.Failures));
        Assert.Equal(6, r.Passed);
    }

    [Fact]
    public void Planted_dropped_write_is_caught()
    {
        var r = new RaceSimulator { Requests = 400, FailProbability = 0, PlantDropDataWrite = 5 }.Run(seed: 1, seeds: 6);
        Assert.True(r.Failed > 0, r.Line);
        Assert.Contains("replay: fvd-reliability sim --seed", r.Failures[0], StringComparison.Ordinal);
    }

    [Fact]
    public void Planted_swallowed_device_error_is_caught()
    {
        var r = new RaceSimulator { Requests = 400, FailProbability = 0.05, PlantSwallowErrors = true }.Run(seed: 1, seeds: 3);
        Assert.True(r.Failed > 0, r.Line);
        Assert.Contains(r.Failures, f => f.Contains("acknowledged", StringComparison.Ordinal));
    }
}

public sealed class FsxTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fvd-fsx-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Plain_file_run_finds_no_failures()
    {
        string f = Path.Combine(_dir, "plain.raw");
        using var t = new PosixFileTarget(f, direct: false, createSize: 1 << 20);
        var r = new FileExerciser().Run(t, 5000, seed: 1, f);
        Assert.True(r.Failed == 0, string.Join("\n", r.Failures));
        Assert.Equal(5000, r.Passed);
    }

    [Fact]
    public void Direct_io_run_finds_no_failures()
    {
        string f = Path.Combine(_dir, "direct.raw");
        using var t = new PosixFileTarget(f, direct: true, createSize: 1 << 20);
        var r = new FileExerciser { Alignment = t.Alignment }.Run(t, 300, seed: 2, f);
        Assert.True(r.Failed == 0, string.Join("\n", r.Failures));
    }

    [Fact]
    public void Fvd_image_run_finds_no_failures()
    {
        string img = FileExerciser.MakeImage(_dir, 3, 1 << 20);
        using var t = new FvdImageTarget(img);
        var r = new FileExerciser().Run(t, 3000, seed: 3, img);
        Assert.True(r.Failed == 0, string.Join("\n", r.Failures));
    }

    [Fact]
    public void Planted_corrupted_write_is_caught()
    {
        string f = Path.Combine(_dir, "bad.raw");
        using var t = new CorruptingTarget(new PosixFileTarget(f, direct: false, createSize: 1 << 20), corruptWriteNumber: 10);
        var r = new FileExerciser().Run(t, 5000, seed: 4, f);
        Assert.Equal(1, r.Failed);
        Assert.Contains("mismatch", r.Failures[0], StringComparison.Ordinal);
        Assert.Contains("Last ops", r.Failures[0], StringComparison.Ordinal);
    }
}

public class FuzzerTests
{
    [Fact]
    public void Small_run_finds_no_failures()
    {
        var r = new HostileImageFuzzer().Run(seed: 1, count: 3000);
        Assert.True(r.Failed == 0, string.Join("\n", r.Failures));
        Assert.Equal(3000, r.Passed);
    }

    [Fact]
    public void Planted_non_fvd_exception_is_caught()
    {
        var r = new HostileImageFuzzer
        {
            Exerciser = m =>
            {
                if (m.Meta.Length > 57 && (m.Meta[57] & 1) != 0) throw new InvalidOperationException("planted: odd block-size byte");
                HostileImageFuzzer.Exercise(m);
            },
        }.Run(seed: 1, count: 3000);
        Assert.True(r.Failed > 0, r.Line);
        Assert.Contains("InvalidOperationException", r.Failures[0], StringComparison.Ordinal);
    }

    [Fact]
    public void Security_checks_pass()
    {
        var r = SecurityChecks.Run();
        Assert.True(r.Failed == 0, string.Join("\n", r.Failures));
        Assert.True(r.Passed >= 13, r.Line);
    }
}
