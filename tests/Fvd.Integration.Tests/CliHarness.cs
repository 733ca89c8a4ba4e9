// Runs fvd-img in-process (Program.Run with captured writers) inside a temporary directory, and builds the
// raw templates the tests create images over.
using System.Diagnostics;
using Fvd.Core.Image;

namespace Fvd.Integration.Tests;

public sealed record CliResult(int Code, string Out, string Err)
{
    /// <summary>stderr's lines (without blanks).</summary>
    public string[] ErrLines => Err.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}

public sealed class CliHarness : IDisposable
{
    public string Dir { get; } = Directory.CreateTempSubdirectory("fvdimg-").FullName;

    public string P(string name) => Path.Combine(Dir, name);

    public CliResult Img(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int rc = Fvd.Img.Program.Run(args, o, e);
        return new CliResult(rc, o.ToString(), e.ToString());
    }

    /// <summary>
    /// A sparse raw template of size bytes: random data at the given MiB offsets (1 MiB each), an allocated
    /// all-zero MiB at each zeroMiB offset, holes elsewhere. Returns the expected content.
    /// </summary>
    public byte[] MakeTemplate(string path, long size, int[] dataMiB, int[] zeroMiB, int seed = 1)
    {
        var content = new byte[size];
        var rnd = new Random(seed);
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write);
        fs.SetLength(size);
        foreach (int m in dataMiB)
        {
            var chunk = new byte[1 << 20];
            rnd.NextBytes(chunk);
            fs.Position = (long)m << 20;
            fs.Write(chunk);
            chunk.CopyTo(content, (long)m << 20);
        }
        foreach (int m in zeroMiB)
        {
            fs.Position = (long)m << 20;
            fs.Write(new byte[1 << 20]);
        }
        return content;
    }

    public static long Allocated(string path) => ImageInfo.AllocatedBytes(path);

    /// <summary>Runs a real program (cmp, ...) and returns its exit code.</summary>
    public static int Exec(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.StandardOutput.ReadToEnd();
        p.StandardError.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode;
    }

    public void Dispose()
    {
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
    }
}
