namespace Fvd.Integration.Tests;

/// <summary>
/// Tests whose outcome depends on wall-clock rates (adaptive prefetch): run alone, after the parallel ones,
/// so other tests' CPU load does not distort the throughput they measure.
/// </summary>
[CollectionDefinition("Timing", DisableParallelization = true)]
public sealed class TimingCollection;
