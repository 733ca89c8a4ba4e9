// qemu-img and qemu-io as reference tools for the qcow2 reader: they make the test images and say what
// the images hold (convert -O raw, map). Installed by `make deps` (qemu-utils); a test fails, never skips,
// when they are missing.
using System.Diagnostics;
using System.Text.Json;

namespace Fvd.Core.Tests;

public static class Qemu
{
    public static void Require()
    {
        foreach (var tool in new[] { "qemu-img", "qemu-io" })
            if (!Environment.GetEnvironmentVariable("PATH")!.Split(':').Any(d => File.Exists(Path.Combine(d, tool))))
                Assert.Fail($"'{tool}' is not installed; the qcow2 tests need it (apt-get install qemu-utils, or make deps)");
    }

    /// <summary>Runs a tool, fails the test on a non-zero exit, returns stdout.</summary>
    public static string Run(string tool, params string[] args)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{tool} {string.Join(' ', args)} exited {p.ExitCode}: {stderr.Result}");
        return stdout;
    }

    /// <summary>qemu-img create -f qcow2 with "-o" options (may be empty) and an optional qcow2 backing.</summary>
    public static void Create(string path, long size, string options, string? backing = null, string backingFormat = "qcow2")
    {
        var args = new List<string> { "create", "-q", "-f", "qcow2" };
        if (options.Length > 0) args.AddRange(["-o", options]);
        if (backing is not null) args.AddRange(["-b", backing, "-F", backingFormat]);
        args.AddRange([path, size.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        Run("qemu-img", [.. args]);
    }

    /// <summary>
    /// Fills an image with a seeded mix: first (when compress) compressed writes of whole distinct clusters
    /// (qemu compresses only into unallocated clusters), then pattern writes at unaligned offsets, zero
    /// writes and discards over everything. Returns the qemu-io commands run.
    /// </summary>
    public static List<string> Fill(string path, long size, int clusterSize, int seed, bool compress, int ops = 40)
    {
        var rnd = new Random(seed);
        var cmds = new List<string>();
        long clusters = size / clusterSize;
        if (compress)
            foreach (long c in Enumerable.Range(0, 12).Select(_ => rnd.NextInt64(clusters)).Distinct())
                cmds.Add($"write -c -P {rnd.Next(1, 256)} {c * clusterSize} {clusterSize}");
        for (int i = 0; i < ops; i++)
        {
            int what = rnd.Next(4);
            long off, len;
            if (what <= 1)
            {
                off = rnd.NextInt64(size);
                len = Math.Min(size - off, 1 + rnd.Next(3 * clusterSize + 777));
                cmds.Add($"write -P {rnd.Next(1, 256)} {off} {len}");
            }
            else if (what == 2)
            {
                off = rnd.NextInt64(size);
                len = Math.Min(size - off, 1 + rnd.Next(2 * clusterSize + 999));
                cmds.Add($"write -z {off} {len}");
            }
            else
            {
                off = rnd.NextInt64(clusters) * clusterSize;
                len = clusterSize * Math.Min(clusters - off / clusterSize, 1 + rnd.Next(3));
                cmds.Add($"discard {off} {len}");
            }
        }
        var args = new List<string> { "-f", "qcow2" };
        foreach (var c in cmds) args.AddRange(["-c", c]);
        args.Add(path);
        Run("qemu-io", [.. args]);
        return cmds;
    }

    /// <summary>qemu-img convert -O raw; returns the raw bytes.</summary>
    public static byte[] ToRaw(string qcow2, string raw)
    {
        Run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", qcow2, raw);
        return File.ReadAllBytes(raw);
    }

    public readonly record struct MapEntry(long Start, long Length, bool Zero, bool Data);

    /// <summary>qemu-img map --output=json.</summary>
    public static List<MapEntry> Map(string qcow2)
    {
        using var doc = JsonDocument.Parse(Run("qemu-img", "map", "-f", "qcow2", "--output=json", qcow2));
        return doc.RootElement.EnumerateArray().Select(e => new MapEntry(
            e.GetProperty("start").GetInt64(), e.GetProperty("length").GetInt64(),
            e.GetProperty("zero").GetBoolean(), e.GetProperty("data").GetBoolean())).ToList();
    }
}
