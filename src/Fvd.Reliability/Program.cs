// fvd-reliability: the reliability harnesses (src/Fvd.Reliability/README.md).
//   fvd-reliability all [--long] [--seed S]
//   fvd-reliability crash [--workloads N] [--seed S]
//   fvd-reliability sim [--seeds N] [--requests N] [--seed S]
//   fvd-reliability fsx --path FILE --ops N --seed S [--direct] [--size BYTES]
//   fvd-reliability fuzz [--count N] [--seed S]
//   fvd-reliability fuzz-qcow2 [--count N] [--seed S]
// Every figure prints one line ending in "N passed, N failed"; the exit code is 1 on any failure.
using System.Diagnostics;

namespace Fvd.Reliability;

public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.WriteLine("usage: fvd-reliability all [--long] [--seed S] | crash [--workloads N] [--seed S] | sim [--seeds N] [--requests N] [--seed S]\n"
                + "       | fsx --path FILE [--ops N] [--seed S] [--direct] [--size BYTES] | fuzz [--count N] [--seed S]\n"
                + "       | fuzz-qcow2 [--count N] [--seed S]");
            return args.Length == 0 ? 2 : 0;
        }
        int seed = (int)Args.GetLong(args, "--seed", 1);
        bool longRun = Args.Has(args, "--long");
        var results = new List<HarnessResult>();
        try
        {
            switch (args[0])
            {
                case "crash":
                    results.Add(Timed(() => new CrashStateHarness().Run(seed, (int)Args.GetLong(args, "--workloads", 60))));
                    break;
                case "fsx":
                {
                    string path = Args.Get(args, "--path") ?? throw new ArgumentException("fsx needs --path FILE");
                    bool direct = Args.Has(args, "--direct");
                    long ops = Args.GetLong(args, "--ops", 10000);
                    using var t = new PosixFileTarget(path, direct, Args.GetLong(args, "--size", 0));
                    results.Add(Timed(() => new FileExerciser { Alignment = t.Alignment }.Run(t, ops, seed, path)));
                    break;
                }
                case "sim":
                    results.Add(Timed(() => new RaceSimulator { Requests = (int)Args.GetLong(args, "--requests", 2000) }.Run(seed, (int)Args.GetLong(args, "--seeds", 200))));
                    break;
                case "security":
                    results.Add(Timed(SecurityChecks.Run));
                    break;
                case "fuzz":
                    results.Add(Timed(() => new HostileImageFuzzer().Run(seed, (int)Args.GetLong(args, "--count", 100_000))));
                    break;
                case "fuzz-qcow2":
                    results.Add(Timed(() => new Qcow2Fuzzer().Run(seed, (int)Args.GetLong(args, "--count", 20_000))));
                    break;
                case "all":
                    results.Add(Timed(() => new CrashStateHarness().Run(seed, longRun ? 2000 : 200)));
                    results.Add(Timed(() => new RaceSimulator { Requests = longRun ? 10_000 : 2000 }.Run(seed, longRun ? 1000 : 200)));
                    results.AddRange(FsxAll(seed, longRun));
                    results.Add(Timed(() => new HostileImageFuzzer().Run(seed, longRun ? 2_000_000 : 100_000)));
                    results.Add(Timed(() => new Qcow2Fuzzer().Run(seed, longRun ? 200_000 : 20_000)));
                    results.Add(Timed(SecurityChecks.Run));
                    break;
                default:
                    Console.Error.WriteLine($"fvd-reliability: unknown command '{args[0]}'");
                    return 2;
            }
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"fvd-reliability: {e.Message}");
            return 2;
        }
        long failed = 0;
        foreach (var r in results)
        {
            foreach (var f in r.Failures) Console.WriteLine($"FAIL {f}");
            foreach (var n in r.Notes) Console.WriteLine($"note: {n}");
            failed += r.Failed;
        }
        foreach (var r in results) Console.WriteLine(r.Line);
        return failed == 0 && results.Count > 0 ? 0 : 1;
    }

    /// <summary>The exerciser on a plain temp file, the same with O_DIRECT, and an FVD image in-process.</summary>
    private static IEnumerable<HarnessResult> FsxAll(int seed, bool longRun)
    {
        long scale = longRun ? 10 : 1;
        string dir = Directory.CreateTempSubdirectory("fvd-fsx-").FullName; // /tmp: a real disk file system
        string shm = Directory.Exists("/dev/shm") ? Path.Combine("/dev/shm", $"fvd-fsx-{Environment.ProcessId}-{seed}") : dir;
        Directory.CreateDirectory(shm);
        try
        {
            string file = Path.Combine(dir, "plain.raw");
            using (var t = new PosixFileTarget(file, direct: false, createSize: 2 << 20))
                yield return Timed(() => new FileExerciser { Name = "fsx-file" }.Run(t, 30_000 * scale, seed, file));
            using (var t = new PosixFileTarget(file, direct: true))
                yield return Timed(() => new FileExerciser { Name = "fsx-direct", Alignment = 4096 }.Run(t, 5_000 * scale, seed + 1, file + " (O_DIRECT)"));
            // The image lives in /dev/shm when there is one: its Flush is an fdatasync of two files.
            string img = FileExerciser.MakeImage(shm, seed, 2 << 20);
            using (var t = new FvdImageTarget(img))
                yield return Timed(() => new FileExerciser { Name = "fsx-image" }.Run(t, 65_000 * scale, seed + 2, img));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
            if (shm != dir) Directory.Delete(shm, recursive: true);
        }
    }

    private static HarnessResult Timed(Func<HarnessResult> run)
    {
        var sw = Stopwatch.StartNew();
        var r = run();
        r.Notes.Add($"{r.Name} took {sw.Elapsed.TotalSeconds:F1} s");
        return r;
    }
}
