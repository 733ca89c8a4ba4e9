using System.Diagnostics;
using Fvd.Core.Format;
using Fvd.Core.Image;

namespace Fvd.Core.Tests;

/// <summary>The prefetcher's two stages (read and write) pausing at the same time.</summary>
public class PrefetcherTests
{
    [Fact]
    public void StateShowsPausedWhileEitherStageIsPaused()
    {
        var state = new Prefetcher.StateCell();
        Assert.Equal(PrefetchState.Waiting, state.Current);
        state.Set(PrefetchState.Running);

        // Read stage pauses, write stage pauses, the read stage resumes first: still paused.
        var read = state.EnterPause();
        var write = state.EnterPause();
        read.Dispose();
        Assert.Equal(PrefetchState.Paused, state.Current);
        write.Dispose();
        Assert.Equal(PrefetchState.Running, state.Current);

        // The other order.
        write = state.EnterPause();
        read = state.EnterPause();
        write.Dispose();
        Assert.Equal(PrefetchState.Paused, state.Current);
        read.Dispose();
        Assert.Equal(PrefetchState.Running, state.Current);

        // A stage that resumes after the run has ended does not bring back "running".
        var late = state.EnterPause();
        state.Set(PrefetchState.Disabled);
        late.Dispose();
        Assert.Equal(PrefetchState.Disabled, state.Current);
    }

    [Fact]
    public void PrefetchThatBacksOffAtEveryChunkInBothStagesFinishes()
    {
        // Lower limits no storage reaches: both stages decide at every 4 KiB chunk whether to pause, from
        // their two threads at once. The run must still finish with the right content, and once finished the
        // state must stay finished.
        using var dir = new TempDir();
        var backing = new byte[512 << 10];
        new Random(11).NextBytes(backing);
        File.WriteAllBytes(dir.File("base.raw"), backing);
        string path = dir.File("t.fvd");
        FvdImage.Create(path, new FvdCreateOptions { VirtualSize = backing.Length, BackingFile = "base.raw", BlockSize = 4096, ZeroAware = false });
        using var img = FvdImage.Open(path);
        var seen = new List<PrefetchState>();
        img.StartBackgroundWork(copyOnRead: false, prefetch: PrefetchSettings.Default with
        {
            StartDelaySeconds = 0, ChunkBytes = 4096, MinReadKiBps = int.MaxValue, MinWriteKiBps = int.MaxValue, ThrottleMs = 2,
        });
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(120))
        {
            var s = img.Status.Prefetch;
            seen.Add(s);
            if (s is PrefetchState.Finished or PrefetchState.Disabled) break;
            Thread.Sleep(1);
        }
        for (int i = 0; i < 100; i++) seen.Add(img.Status.Prefetch);
        Assert.Null(img.PrefetchError);
        int finished = seen.IndexOf(PrefetchState.Finished);
        Assert.True(finished >= 0, $"prefetch did not finish; last state {seen[^1]}");
        Assert.All(seen.Skip(finished), s => Assert.Equal(PrefetchState.Finished, s));
        Assert.True(img.Status.Finished);
        var all = new byte[backing.Length];
        img.Read(0, all);
        Assert.Equal(backing, all);
    }
}
