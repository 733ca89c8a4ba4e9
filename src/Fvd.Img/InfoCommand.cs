// fvd-img info [--output=human|json] IMAGE — every header field, read without taking the image lock.
// A qcow2 file (found by magic) gets a short summary of its header instead.
using System.CommandLine;
using System.Text.Json;
using Fvd.Core;
using Fvd.Core.Format;
using Fvd.Core.Image;
using Fvd.Core.Io;
using Fvd.Core.Qcow2;

namespace Fvd.Img;

internal sealed class InfoCommand(Cli cli) : InspectCommand(cli)
{
    protected override string Name => "info";
    protected override string Description => "Show every header field of an image (works while it is mounted).";


    protected override bool AcceptsQcow2 => true;

    private readonly Option<bool> _chain = new("--backing-chain") { Description = "Show every image of the backing chain, top first" };
    private bool _wholeChain;

    protected override void Configure(Command c)
    {
        base.Configure(c);
        c.Options.Add(_chain);
    }

    protected override int Execute(ParseResult p)
    {
        _wholeChain = p.GetValue(_chain);
        return base.Execute(p);
    }

    protected override int Inspect(string path, bool json)
    {
        if (!_wholeChain)
        {
            string fmt = File.Exists(path) ? Converter.DetectFormat(path) : "fvd";
            Cli.Out.WriteLine(fmt == "qcow2" ? Qcow2Text(path, json) : FvdText(path, json).Text);
            return ExitCode.Ok;
        }
        // As qemu-img info --backing-chain: human blocks separated by a blank line, JSON as one list.
        var parts = new List<string>();
        var seen = new HashSet<string>();
        string? next = path;
        string format = File.Exists(path) && Converter.DetectFormat(path) == "qcow2" ? "qcow2" : "fvd";
        while (next is not null)
        {
            string id = FileIdentity.Key(next);
            if (!seen.Add(id)) throw new FvdException(FvdErrorKind.InvalidFormat, "backing chain loops back to this file", next);
            string? below = null, belowFormat = null;
            switch (format)
            {
                case "fvd":
                    var (text, info) = FvdText(next, json);
                    parts.Add(text);
                    (below, belowFormat) = (info.BackingFullPath, info.BackingFormat);
                    break;
                case "qcow2":
                    parts.Add(Qcow2Text(next, json));
                    Qcow2Header h;
                    using (var f = FileDevice.Open(next, readOnly: true)) h = Qcow2Device.ReadHeader(f, next);
                    if (h.BackingFile is not null) (below, belowFormat) = (FvdImage.ResolveRelative(next, h.BackingFile), h.BackingFormat ?? "raw");
                    break;
                default:
                    parts.Add(RawText(next, json));
                    break;
            }
            (next, format) = (below, belowFormat ?? "raw");
        }
        Cli.Out.WriteLine(json ? "[" + string.Join(",\n", parts) + "]" : string.Join("\n\n", parts));
        return ExitCode.Ok;
    }

    /// <summary>A raw backing as qemu-img info shows one: its size and the space it takes.</summary>
    private static string RawText(string path, bool json)
    {
        long size, disk = 0;
        if (HttpRangeDevice.IsUrl(path))
        {
            using var d = HttpRangeDevice.Open(path);
            size = d.Length;
        }
        else
        {
            using var d = FileDevice.Open(path, readOnly: true);
            size = d.Length;
            disk = ImageInfo.AllocatedBytes(path);
        }
        if (!json)
            return $"image: {path}\nfile format: raw\nvirtual size: {Sizes.Human(size)} ({size} bytes)\ndisk size: {Sizes.Human(disk)}";
        return Json(w =>
        {
            w.WriteStartObject();
            w.WriteNumber("virtual-size", size);
            w.WriteString("filename", path);
            w.WriteString("format", "raw");
            w.WriteNumber("actual-size", disk);
            w.WriteEndObject();
        });
    }

    private static string Json(Action<Utf8JsonWriter> write)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true })) write(w);
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }

    private (string Text, ImageInfo Info) FvdText(string path, bool json)
    {
        var info = ImageInfo.Read(path);
        var sw = new StringWriter();
        if (json) WriteJson(info, sw);
        else WriteHuman(info, sw);
        return (sw.ToString().TrimEnd('\n'), info);
    }

    private static string OnOff(bool b) => b ? "on" : "off";
    private static string YesNo(bool b) => b ? "yes" : "no";
    private static string Rate(int kib) => kib == 0 ? "unlimited" : $"{kib} KiB/s";

    private static string Features(ulong bits, IReadOnlyDictionary<ulong, string> names)
    {
        var l = ImageInfo.FeatureNames(bits, names);
        return l.Count == 0 ? $"none (0x{bits:x})" : $"{string.Join(", ", l)} (0x{bits:x})";
    }

    private static void WriteHuman(ImageInfo i, TextWriter o)
    {
        var h = i.Header;
        o.WriteLine($"image: {i.Filename}");
        o.WriteLine("file format: fvd");
        o.WriteLine($"virtual size: {Sizes.Human(i.VirtualSize)} ({i.VirtualSize} bytes)");
        o.WriteLine($"disk size: {Sizes.Human(i.DiskSize)}");
        o.WriteLine($"block size: {i.BlockSize}");
        if (i.BackingFile is not null)
        {
            o.WriteLine($"backing file: {i.BackingFile} (actual path: {i.BackingFullPath})");
            o.WriteLine($"backing file format: {i.BackingFormat}");
            string actual = i.BackingActualSize is long a ? $"{a} bytes" : "missing";
            o.WriteLine($"backing size: {i.BackingSize} bytes covered by the bitmap (file now: {actual})");
        }
        o.WriteLine(i.InlineData ? $"data: inline at offset {h.DataOffset}"
            : $"data file: {i.DataFile} (actual path: {i.DataPath}{(i.DataFileSize is null ? ", missing" : "")})");
        o.WriteLine("Format specific information:");
        o.WriteLine($"    version: {h.Version}");
        o.WriteLine($"    metadata file size: {i.MetadataFileSize}");
        o.WriteLine($"    bitmap: offset {i.BitmapOffset}, {i.BitmapLength} bytes");
        o.WriteLine($"    blocks local: {i.BlocksLocal} / {i.BlocksTotal}");
        o.WriteLine($"    clean: {YesNo(i.Clean)}");
        o.WriteLine($"    prefetch finished: {YesNo(i.PrefetchFinished)}");
        o.WriteLine($"    copy on read: {OnOff(i.CopyOnRead)}");
        o.WriteLine($"    corrupt: {(i.Corrupt ? "true" : "false")}");
        var pf = i.Prefetch;
        o.WriteLine("    prefetch:");
        o.WriteLine($"        start delay: {(pf.StartDelaySeconds < 0 ? "never" : pf.StartDelaySeconds + " s")}");
        o.WriteLine($"        chunk: {(pf.ChunkBytes == 0 ? "default (1 MiB)" : pf.ChunkBytes + " bytes")}");
        o.WriteLine($"        read: min {Rate(pf.MinReadKiBps)}, max {Rate(pf.MaxReadKiBps)}");
        o.WriteLine($"        write: min {Rate(pf.MinWriteKiBps)}, max {Rate(pf.MaxWriteKiBps)}");
        o.WriteLine($"        throttle: {pf.ThrottleMs} ms");
        o.WriteLine($"        max outstanding copy-on-read: {pf.MaxOutstandingCorBytes} bytes");
        o.WriteLine($"    incompatible features: {Features((ulong)h.Incompatible, ImageInfo.IncompatibleNames)}");
        o.WriteLine($"    compatible features: {Features((ulong)h.Compatible, ImageInfo.CompatibleNames)}");
        o.WriteLine($"    autoclear features: {Features((ulong)h.Autoclear, ImageInfo.AutoclearNames)}");
        if (LiveStatus.Find(i.Filename) is { } live)
        {
            o.WriteLine($"Live status (served by fvdmount at {live.MountPoint}):");
            foreach (var prop in live.Status.EnumerateObject())
                o.WriteLine($"    {prop.Name.Replace('_', ' ')}: {prop.Value}");
        }
    }

    private static void WriteJson(ImageInfo i, TextWriter o)
    {
        var h = i.Header;
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteNumber("virtual-size", i.VirtualSize);
            w.WriteString("filename", i.Filename);
            w.WriteNumber("cluster-size", i.BlockSize);
            w.WriteString("format", "fvd");
            w.WriteNumber("actual-size", i.DiskSize);
            w.WriteBoolean("dirty-flag", !i.Clean);
            if (i.BackingFile is not null)
            {
                w.WriteString("backing-filename", i.BackingFile);
                w.WriteString("full-backing-filename", i.BackingFullPath);
                w.WriteString("backing-filename-format", i.BackingFormat);
            }
            w.WriteStartObject("format-specific");
            w.WriteString("type", "fvd");
            w.WriteStartObject("data");
            w.WriteNumber("version", h.Version);
            w.WriteNumber("block-size", i.BlockSize);
            w.WriteNumber("metadata-file-size", i.MetadataFileSize);
            w.WriteNumber("backing-size", i.BackingSize);
            if (i.BackingFile is not null)
            {
                w.WriteBoolean("backing-present", i.BackingActualSize is not null);
                if (i.BackingActualSize is long a) w.WriteNumber("backing-actual-size", a);
            }
            w.WriteBoolean("inline-data", i.InlineData);
            if (i.InlineData) w.WriteNumber("data-offset", h.DataOffset);
            else
            {
                w.WriteString("data-file", i.DataFile);
                w.WriteString("full-data-file", i.DataPath);
                w.WriteBoolean("data-file-present", i.DataFileSize is not null);
            }
            w.WriteNumber("bitmap-offset", i.BitmapOffset);
            w.WriteNumber("bitmap-length", i.BitmapLength);
            w.WriteNumber("blocks-local", i.BlocksLocal);
            w.WriteNumber("blocks-total", i.BlocksTotal);
            w.WriteBoolean("clean", i.Clean);
            w.WriteBoolean("prefetch-finished", i.PrefetchFinished);
            w.WriteBoolean("copy-on-read", i.CopyOnRead);
            w.WriteBoolean("corrupt", i.Corrupt);
            w.WriteNumber("flags", (uint)h.Flags);
            var pf = i.Prefetch;
            w.WriteStartObject("prefetch");
            w.WriteNumber("start-delay", pf.StartDelaySeconds);
            w.WriteNumber("chunk", pf.ChunkBytes);
            w.WriteNumber("min-read", pf.MinReadKiBps);
            w.WriteNumber("max-read", pf.MaxReadKiBps);
            w.WriteNumber("min-write", pf.MinWriteKiBps);
            w.WriteNumber("max-write", pf.MaxWriteKiBps);
            w.WriteNumber("throttle", pf.ThrottleMs);
            w.WriteNumber("max-outstanding-cor", pf.MaxOutstandingCorBytes);
            w.WriteEndObject();
            WriteFeatures(w, "incompatible-features", (ulong)h.Incompatible, ImageInfo.IncompatibleNames);
            WriteFeatures(w, "compatible-features", (ulong)h.Compatible, ImageInfo.CompatibleNames);
            WriteFeatures(w, "autoclear-features", (ulong)h.Autoclear, ImageInfo.AutoclearNames);
            w.WriteEndObject();
            w.WriteEndObject();
            if (LiveStatus.Find(i.Filename) is { } live)
            {
                w.WriteString("mounted-at", live.MountPoint);
                w.WritePropertyName("live-status");
                live.Status.WriteTo(w);
            }
            w.WriteEndObject();
        }
        o.WriteLine(System.Text.Encoding.UTF8.GetString(ms.ToArray()));
    }

    /// <summary>A qcow2 file (a template or a convert source): its header only, as qemu-img info names the fields.</summary>
    private static string Qcow2Text(string path, bool json)
    {
        Qcow2Header h;
        using (var f = FileDevice.Open(path, readOnly: true)) h = Qcow2Device.ReadHeader(f, path);
        string compression = h.Compression.ToString().ToLowerInvariant();
        if (!json)
        {
            var o = new StringWriter();
            o.WriteLine($"image: {path}");
            o.WriteLine("file format: qcow2");
            o.WriteLine($"virtual size: {Sizes.Human((long)h.Size)} ({h.Size} bytes)");
            o.WriteLine($"cluster size: {h.ClusterSize}");
            if (h.BackingFile is not null)
            {
                o.WriteLine($"backing file: {h.BackingFile}");
                o.WriteLine($"backing file format: {h.BackingFormat ?? "(not recorded)"}");
            }
            o.WriteLine("Format specific information:");
            o.WriteLine($"    version: {h.Version}");
            o.WriteLine($"    compression type: {compression}");
            o.WriteLine($"    extended l2: {(h.ExtendedL2 ? "true" : "false")}");
            return o.ToString().TrimEnd('\n');
        }
        return Json(w =>
        {
            w.WriteStartObject();
            w.WriteNumber("virtual-size", h.Size);
            w.WriteString("filename", path);
            w.WriteNumber("cluster-size", h.ClusterSize);
            w.WriteString("format", "qcow2");
            if (h.BackingFile is not null)
            {
                w.WriteString("backing-filename", h.BackingFile);
                if (h.BackingFormat is not null) w.WriteString("backing-filename-format", h.BackingFormat);
            }
            w.WriteStartObject("format-specific");
            w.WriteString("type", "qcow2");
            w.WriteStartObject("data");
            w.WriteNumber("version", h.Version);
            w.WriteString("compression-type", compression);
            w.WriteBoolean("extended-l2", h.ExtendedL2);
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteEndObject();
        });
    }

    private static void WriteFeatures(Utf8JsonWriter w, string name, ulong bits, IReadOnlyDictionary<ulong, string> names)
    {
        w.WriteStartArray(name);
        foreach (var n in ImageInfo.FeatureNames(bits, names)) w.WriteStringValue(n);
        w.WriteEndArray();
    }
}
