// The loop both mutation fuzzers share: seeded cases on a worker thread, each under the same limits (a
// refusal is FvdException, anything else fails; at most SlowLimit and AllocationCap per case), while the
// calling thread watches for a real hang and stops the run with the case that hung.
using System.Diagnostics;

namespace Fvd.Reliability;

/// <summary>One fuzz case: what it is, and its body, which returns a failure message or null.</summary>
internal readonly record struct FuzzCase(string Description, Func<string?> Run);

internal static class MutantRunner
{
    /// <summary>Runs cases 0..count-1, case i made by make(new Random(seed * 1000003 + i)).</summary>
    public static void Run(HarnessResult result, int seed, int count, Func<Random, FuzzCase> make)
    {
        long started = 0; // Stopwatch timestamp of the current case, 0 when idle
        int current = -1;
        bool finished = false;
        string currentDesc = "";
        var worker = new Thread(() =>
        {
            for (int i = 0; i < count; i++)
            {
                var c = make(new Random(unchecked(seed * 1_000_003 + i)));
                Volatile.Write(ref currentDesc, c.Description);
                Volatile.Write(ref current, i);
                long a0 = GC.GetAllocatedBytesForCurrentThread();
                long t0 = Stopwatch.GetTimestamp();
                Volatile.Write(ref started, t0);
                string? fail = c.Run();
                var el = Stopwatch.GetElapsedTime(t0);
                Volatile.Write(ref started, 0);
                long alloc = GC.GetAllocatedBytesForCurrentThread() - a0;
                string where = $"{result.Name} seed {seed} case {i} ({c.Description})";
                if (fail is not null) result.Fail($"{where}: {fail}");
                else if (el > HostileImageFuzzer.SlowLimit) result.Fail($"{where}: took {el.TotalSeconds:F2} s");
                else if (alloc > HostileImageFuzzer.AllocationCap) result.Fail($"{where}: allocated {alloc} bytes");
                else result.Pass();
            }
            Volatile.Write(ref finished, true);
        }) { IsBackground = true, Name = result.Name + "-worker" };
        worker.Start();
        while (!Volatile.Read(ref finished))
        {
            worker.Join(200);
            long s = Volatile.Read(ref started);
            if (s != 0 && Stopwatch.GetElapsedTime(s) > HostileImageFuzzer.HangLimit)
            {
                result.Fail($"{result.Name} seed {seed} case {Volatile.Read(ref current)} ({Volatile.Read(ref currentDesc)}): hung for more than {HostileImageFuzzer.HangLimit.TotalSeconds} s; fuzzing stopped");
                break;
            }
        }
    }

    /// <summary>Runs body: null when it passed or refused with FvdException, else what it threw.</summary>
    public static string? Refusal(Action body, string prefix = "")
    {
        try
        {
            body();
            return null;
        }
        catch (Fvd.Core.FvdException)
        {
            return null;
        }
        catch (Exception e)
        {
            return $"{prefix}{e.GetType().Name}: {e.Message}";
        }
    }
}
