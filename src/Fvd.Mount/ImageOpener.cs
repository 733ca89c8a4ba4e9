// How fvdmount turns an image argument into a device: an FVD image (recognized by its magic, never by its
// name) opens through the FVD driver with copy-on-read and prefetch started as the image's header says, or as
// the mount options override; anything else is served as a plain RAW file. This is the one place images are
// opened. The returned OpenedImage must be closed, which (with record_profile) writes the read log, flushes
// the device and, for FVD, marks the image clean.
using System.Globalization;
using System.Text.Json;
using Fvd.Core;
using Fvd.Core.Format;
using Fvd.Core.Image;
using Fvd.Core.Io;
using Fvd.Fuse;

namespace Fvd.Mount;

/// <summary>How to open each image (from the mount options). Null means "as the image's header says".</summary>
public sealed record ImageOptions
{
    public bool ReadOnly { get; init; }
    /// <summary>-o cor=on|off.</summary>
    public bool? CopyOnRead { get; init; }
    /// <summary>-o prefetch: -1 off, 0 now, N seconds after mounting.</summary>
    public int? PrefetchDelaySeconds { get; init; }
    /// <summary>-o prefetch_max_read (0 = unlimited).</summary>
    public int? PrefetchMaxReadKiBps { get; init; }
    /// <summary>-o prefetch_min_read: below this rate prefetch pauses (contention).</summary>
    public int? PrefetchMinReadKiBps { get; init; }
    /// <summary>-o record_profile: record backing reads from mount to unmount.</summary>
    public bool RecordProfile { get; init; }
    /// <summary>-o passthrough=on|off: offer finished images' data files for FUSE passthrough.</summary>
    public bool Passthrough { get; init; } = true;
    /// <summary>-o lock_wait=SECONDS: wait for a lock held by a process closing the image; 0 = never.</summary>
    public int LockWaitSeconds { get; init; } = 30;
    /// <summary>Where the one-line "waiting for process N" notice goes (default: stderr).</summary>
    public Action<string>? LockWaitNotice { get; init; }

    internal LockWait LockWait => new(TimeSpan.FromSeconds(LockWaitSeconds),
        LockWaitNotice ?? (msg => Console.Error.WriteLine($"fvdmount: {msg}")));
}

/// <summary>An open image: its device and, for FVD, the driver object behind it.</summary>
public sealed class OpenedImage : IDisposable
{
    internal OpenedImage(string path, IBlockDevice device, FvdImage? fvd, bool passthrough)
    {
        Path = path;
        Device = device;
        Fvd = fvd;
        _adapter = fvd is null ? null : new FvdImageAdapter(fvd, passthrough);
    }

    private readonly FvdImageAdapter? _adapter;

    public string Path { get; }
    public IBlockDevice Device { get; }
    /// <summary>The FVD image, or null for a plain RAW file.</summary>
    public FvdImage? Fvd { get; }
    public string DisplayName => ImageOpener.DisplayName(Path);

    /// <summary>The file the mount shows, with its status file and (FVD) passthrough source.</summary>
    public FuseImage ToFuseImage() => new(DisplayName, Device) { Status = _adapter, Passthrough = _adapter, Locality = _adapter };

    /// <summary>
    /// Writes the backing ranges recorded since mounting as "OFFSET LENGTH" lines, the read log that
    /// `fvd-img profile record IMAGE FILE` takes. Written to FILE.tmp, made durable, then renamed.
    /// </summary>
    public int WriteRecordedProfile(string file)
    {
        var entries = Fvd?.RecordedProfile() ?? [];
        string tmp = file + ".tmp";
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write))
        using (var w = new StreamWriter(f))
        {
            w.WriteLine($"# fvdmount read log of {System.IO.Path.GetFullPath(Path)}: backing ranges in first-read order (OFFSET LENGTH, bytes)");
            foreach (var (o, l) in entries)
                w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{o} {l}"));
            w.Flush();
            f.Flush(flushToDisk: true);
        }
        File.Move(tmp, file, overwrite: true);
        return entries.Count;
    }

    /// <summary>Lets a process waiting for this image's lock know it is about to be released (FvdImage.MarkClosing).</summary>
    public void MarkClosing()
    {
        if (Fvd is not null) Fvd.MarkClosing();
        else (Device as FileDevice)?.MarkClosing();
    }

    public void Dispose() => Device.Dispose();
}

public static class ImageOpener
{
    /// <summary>Opens an image as a block device. Throws FvdException with a user-readable message.</summary>
    public static IBlockDevice Open(string path, bool readOnly) => Open(path, new ImageOptions { ReadOnly = readOnly }).Device;

    /// <summary>Opens an image with the mount's options. Throws FvdException with a user-readable message.</summary>
    public static OpenedImage Open(string path, ImageOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        bool readOnly = options.ReadOnly;
        if (Converter.DetectFormat(path) == "fvd") // by magic, never by name
        {
            var img = FvdImage.Open(path, new FvdOpenOptions { ReadOnly = readOnly, LockWait = options.LockWait });
            try
            {
                if (img.WasUnclean && !readOnly)
                    Console.Error.WriteLine($"fvdmount: {path}: was not closed cleanly; flushed writes are intact (bits reach the disk only after their data)");
                if (options.RecordProfile)
                {
                    if (!img.Header.HasBacking)
                        throw new FvdException(FvdErrorKind.InvalidArgument, "record_profile needs an image with a backing file", path);
                    img.StartProfileRecording(); // before anything reads: the boot's first reads count most
                }
                img.StartBackgroundWork(options.CopyOnRead, PrefetchFor(img.Header.Prefetch, options));
                return new OpenedImage(path, img, img, options.Passthrough);
            }
            catch
            {
                img.Dispose();
                throw;
            }
        }
        if (options.RecordProfile)
            throw new FvdException(FvdErrorKind.InvalidArgument, "record_profile needs an FVD image with a backing file", path);
        var dev = FileDevice.Open(path, readOnly);
        try
        {
            dev.Lock(exclusive: !readOnly, options.LockWait); // two writers on one image would corrupt it
            return new OpenedImage(path, dev, null, false);
        }
        catch
        {
            dev.Dispose();
            throw;
        }
    }

    /// <summary>The header's prefetch settings with the mount options applied (null: keep the header's).</summary>
    public static PrefetchSettings? PrefetchFor(PrefetchSettings header, ImageOptions o)
    {
        if (o.PrefetchDelaySeconds is null && o.PrefetchMaxReadKiBps is null && o.PrefetchMinReadKiBps is null) return null;
        return header with
        {
            StartDelaySeconds = o.PrefetchDelaySeconds ?? header.StartDelaySeconds,
            MaxReadKiBps = o.PrefetchMaxReadKiBps ?? header.MaxReadKiBps,
            MinReadKiBps = o.PrefetchMinReadKiBps ?? header.MinReadKiBps,
        };
    }

    /// <summary>The name the image gets in the mount: "vm1.fvd" and "vm1.img" both become "vm1.raw".</summary>
    public static string DisplayName(string path) => Path.GetFileNameWithoutExtension(path) + ".raw";
}

/// <summary>
/// What the FUSE server may know of an FVD image without depending on the driver: its live status for
/// .fvd/NAME.json, its data file once that is byte for byte the virtual disk (passthrough), and which requests
/// may wait on the backing (served by the backing workers).
/// </summary>
internal sealed class FvdImageAdapter(FvdImage img, bool passthrough) : IStatusSource, IPassthroughSource, IBackingLocality
{
    // Only a remote template can keep a request waiting for minutes; requests over a local one stay on the
    // reader threads (no copy, no hand-off).
    private readonly bool _remoteBacking = img.BackingPath is { } b && HttpRangeDevice.IsUrl(b);

    public bool MayReadBacking(long offset, long length, bool write) =>
        _remoteBacking && img.MayReadBacking(offset, length, write);

    /// <summary>
    /// The data file when it alone is the disk: not inline in the .fvd, exactly the virtual size, and either
    /// without backing or with every block local (PrefetchFinished). Never reverts while mounted.
    /// </summary>
    public string? PassthroughPath
    {
        get
        {
            if (!passthrough) return null;
            var h = img.Header;
            if (h.InlineData) return null;
            if (h.HasBacking && (h.Flags & HeaderFlags.PrefetchFinished) == 0) return null;
            try { return new FileInfo(img.DataPath).Length == img.Length ? img.DataPath : null; }
            catch (IOException) { return null; }
        }
    }

    public void WriteStatus(Utf8JsonWriter w)
    {
        var s = img.Status;
        w.WriteString("format", "fvd");
        w.WriteString("image", System.IO.Path.GetFullPath(img.Path));
        w.WriteString("data_file", img.DataPath);
        if (img.BackingPath is { } b) w.WriteString("backing_file", b);
        else w.WriteNull("backing_file");
        w.WriteNumber("blocks_local", s.BlocksLocal);
        w.WriteNumber("blocks_total", s.BlocksTotal);
        w.WriteNumber("backing_bytes_read", s.BackingBytesRead);
        w.WriteNumber("copy_on_read_bytes", s.CopyOnReadBytesSaved);
        w.WriteNumber("prefetch_bytes", s.PrefetchBytesSaved);
        w.WriteString("prefetch", s.Prefetch switch
        {
            PrefetchState.Waiting => "waiting",
            PrefetchState.Running => "running",
            PrefetchState.Paused => "paused",
            PrefetchState.Finished => "finished",
            _ => "disabled",
        });
        w.WriteNumber("prefetch_rate", Math.Round(s.PrefetchRate));
        if (img.PrefetchError is { } err) w.WriteString("prefetch_error", err);
        w.WriteBoolean("copy_on_read", s.CopyOnRead);
        w.WriteBoolean("finished", s.Finished);
    }
}
