namespace Fvd.Core.Tests;

/// <summary>A temporary directory removed on Dispose.</summary>
public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("fvdtest-").FullName;
    public string File(string name) => System.IO.Path.Combine(Path, name);
    /// <summary>
    /// Copies a file that an open image holds locked (flock), as a crash would leave it: with cp, since
    /// .NET's own FileShare emulation would refuse to open a locked file.
    /// </summary>
    public static void CopyLocked(string src, string dst)
    {
        using var p = System.Diagnostics.Process.Start("cp", new[] { "--sparse=always", src, dst })!;
        p.WaitForExit();
        if (p.ExitCode != 0) throw new IOException($"cp {src} {dst} failed");
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
