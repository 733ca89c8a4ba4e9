using Fvd.Reliability;

namespace Fvd.Reliability.Tests;

public class Qcow2FuzzerTests
{
    [Fact]
    public void Small_run_finds_no_failures()
    {
        var r = new Qcow2Fuzzer().Run(seed: 1, count: 2000);
        Assert.True(r.Failed == 0, string.Join("\n", r.Failures));
        Assert.Equal(2000, r.Passed);
        Assert.Equal("fuzzed-qcow2: 2000 passed, 0 failed", r.Line);
    }

    [Fact]
    public void Planted_non_fvd_exception_is_caught()
    {
        // A reader that lets an index error escape when cluster_bits is mutated must be reported, not passed.
        var r = new Qcow2Fuzzer
        {
            Exerciser = m =>
            {
                if (m.Description.Contains("cluster_bits", StringComparison.Ordinal)) throw new IndexOutOfRangeException("planted");
                Qcow2Fuzzer.Exercise(m);
            },
        }.Run(seed: 1, count: 2000);
        Assert.True(r.Failed > 0, r.Line);
        Assert.Contains("IndexOutOfRangeException", r.Failures[0], StringComparison.Ordinal);
    }
}
