// Image conversion (fvd-img convert): raw, fvd or qcow2 -> raw or fvd (flattened, no backing).
// Sparse-aware both ways: source holes are found with GetExtent (SEEK_DATA/SEEK_HOLE, or the FVD map) and
// skipped, and data regions are scanned in granules of SparseSize bytes so all-zero granules are not
// written either. The output is created at its full length, sparse, so skipped ranges read as zeros.
using Fvd.Core.Io;

namespace Fvd.Core.Image;

public sealed record ConvertOptions
{
    /// <summary>Source format: "raw", "fvd", "qcow2" or null to detect by magic (anything else = raw).</summary>
    public string? SourceFormat { get; init; }
    /// <summary>Output format: "raw" or "fvd".</summary>
    public string TargetFormat { get; init; } = "raw";
    /// <summary>Creation options for an fvd output; VirtualSize and backing are set by the converter.</summary>
    public FvdCreateOptions? FvdOptions { get; init; }
    /// <summary>Granule for zero detection; 0 = write every byte (fully allocated output).</summary>
    public long SparseSize { get; init; } = 4096;
    /// <summary>Called with (bytes done, bytes total).</summary>
    public Action<long, long>? Progress { get; init; }
    /// <summary>How long to wait for a source image locked by a process that is closing it.</summary>
    public LockWait LockWait { get; init; } = LockWait.Default;
}

public static class Converter
{
    /// <summary>Output formats.</summary>
    public static readonly string[] Formats = ["raw", "fvd"];
    /// <summary>Input formats.</summary>
    public static readonly string[] SourceFormats = ["raw", "fvd", "qcow2"];

    /// <summary>
    /// "fvd" when the file starts with the FVD magic, or has it at 4096 (the second header copy, which keeps
    /// the image usable when the first is damaged); "qcow2" when it starts with the qcow2 magic; else "raw".
    /// Never looks at a backing.
    /// </summary>
    public static string DetectFormat(string path)
    {
        if (!File.Exists(path))
            throw new FvdException(Directory.Exists(path) ? FvdErrorKind.InvalidArgument : FvdErrorKind.NotFound,
                Directory.Exists(path) ? "is a directory, not an image" : "file not found", path);
        using var dev = FileDevice.Open(path, readOnly: true);
        Span<byte> magic = stackalloc byte[8];
        if (dev.Length < magic.Length) return "raw";
        dev.Read(0, magic);
        if (magic.SequenceEqual(Format.FvdHeader.Magic)) return "fvd";
        if (Qcow2.Qcow2Header.HasMagic(magic)) return "qcow2";
        if (dev.Length < Format.FvdHeader.Size + magic.Length) return "raw";
        dev.Read(Format.FvdHeader.Size, magic);
        return magic.SequenceEqual(Format.FvdHeader.Magic) ? "fvd" : "raw";
    }

    /// <summary>Opens a source read-only in the given format.</summary>
    public static IBlockDevice OpenSource(string path, string format, LockWait? wait = null) => format switch
    {
        "fvd" => FvdImage.Open(path, new FvdOpenOptions { ReadOnly = true, LockWait = wait ?? LockWait.Default }),
        "raw" => File.Exists(path) ? FileDevice.Open(path, readOnly: true)
            : throw new FvdException(FvdErrorKind.NotFound, "file not found", path),
        "qcow2" => FvdImage.OpenBacking(path, "qcow2", new FvdOpenOptions()),
        _ => throw new FvdException(FvdErrorKind.InvalidArgument, $"unknown format '{format}' (raw, fvd or qcow2)", path),
    };

    public static void Convert(string source, string target, ConvertOptions o)
    {
        if (!Formats.Contains(o.TargetFormat))
            throw new FvdException(FvdErrorKind.InvalidArgument, $"unknown output format '{o.TargetFormat}' (raw or fvd)", target);
        if (o.SparseSize < 0) throw new FvdException(FvdErrorKind.InvalidArgument, "sparse size must not be negative");
        string fmt = o.SourceFormat ?? DetectFormat(source);
        using var src = OpenSource(source, fmt, o.LockWait);
        // The output (and an fvd output's data file) must be none of the files the input reads.
        IReadOnlyList<(string Path, string Role)> keep = src switch
        {
            FvdImage img => img.Files,
            Qcow2.Qcow2Device q => q.Files,
            _ => [(source, "input file")],
        };
        if (src.Length == 0) throw new FvdException(FvdErrorKind.InvalidArgument, "input is empty", source);
        if (o.TargetFormat == "raw")
        {
            FileIdentity.RefuseAlias(target, "output", keep);
            using var dst = FileDevice.Create(target, src.Length, overwrite: true);
            Copy(src, dst, src.Length, o.SparseSize, o.Progress);
            dst.Flush();
        }
        else
        {
            var co = (o.FvdOptions ?? new FvdCreateOptions { VirtualSize = src.Length }) with
            {
                VirtualSize = src.Length,
                BackingFile = null,
                Overwrite = true,
                Progress = null,
            };
            FvdImage.Create(target, co, keep);
            using var dst = FvdImage.Open(target, new FvdOpenOptions { LockWait = o.LockWait });
            Copy(src, dst, src.Length, o.SparseSize, o.Progress);
            dst.Flush();
        }
    }

    /// <summary>
    /// Copies [0, length) from src to dst, which must read as zeros where nothing is written (a new sparse
    /// file or image). Zero extents of src are skipped; data extents are written granule by granule, skipping
    /// all-zero granules, unless sparseSize is 0.
    /// </summary>
    public static void Copy(IBlockDevice src, IBlockDevice dst, long length, long sparseSize, Action<long, long>? progress)
    {
        const int chunk = 1 << 20;
        int granule = sparseSize <= 0 ? chunk : (int)Math.Min(sparseSize, chunk);
        var buf = new byte[chunk];
        long pos = 0;
        progress?.Invoke(0, length);
        while (pos < length)
        {
            var e = src.GetExtent(pos, length - pos);
            long end = e.Length > 0 ? Math.Min(length, e.End) : length;
            if (e.Kind == ExtentKind.Zero && sparseSize > 0)
            {
                pos = end;
                progress?.Invoke(pos, length);
                continue;
            }
            while (pos < end)
            {
                // Align chunks to the granule so zero detection sees whole granules where it can.
                int n = (int)Math.Min(chunk - pos % granule, end - pos);
                var span = buf.AsSpan(0, n);
                if (e.Kind == ExtentKind.Zero) span.Clear();
                else src.Read(pos, span);
                if (sparseSize <= 0) dst.Write(pos, span);
                else WriteNonZero(dst, pos, span, granule);
                pos += n;
                progress?.Invoke(pos, length);
            }
        }
    }

    private static void WriteNonZero(IBlockDevice dst, long pos, ReadOnlySpan<byte> data, int granule)
    {
        int i = 0;
        while (i < data.Length)
        {
            // Skip zero granules, then gather the following run of non-zero granules into one write.
            int g = (int)Math.Min(granule - (pos + i) % granule, data.Length - i);
            if (DeviceChecks.IsZero(data.Slice(i, g)))
            {
                i += g;
                continue;
            }
            int start = i;
            while (i < data.Length)
            {
                g = (int)Math.Min(granule - (pos + i) % granule, data.Length - i);
                if (DeviceChecks.IsZero(data.Slice(i, g))) break;
                i += g;
            }
            dst.Write(pos + start, data[start..i]);
        }
    }
}
