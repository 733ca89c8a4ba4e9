// Shared pieces of the reliability harnesses: result counting, in-memory images, small helpers.
using Fvd.Core.Format;
using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Reliability;

/// <summary>Passed/failed counts of one harness run, plus the first failure messages (with their seeds).</summary>
public sealed class HarnessResult
{
    private readonly object _lock = new();
    public string Name { get; }
    public long Passed { get; private set; }
    public long Failed { get; private set; }
    public List<string> Failures { get; } = new();
    public List<string> Notes { get; } = new();
    public const int MaxMessages = 20;

    public HarnessResult(string name) => Name = name;

    public void Pass(long n = 1) { lock (_lock) Passed += n; }

    public void Fail(string message)
    {
        lock (_lock)
        {
            Failed++;
            if (Failures.Count < MaxMessages) Failures.Add(message);
        }
    }

    public void Add(HarnessResult other)
    {
        lock (_lock)
        {
            Passed += other.Passed;
            Failed += other.Failed;
            foreach (var f in other.Failures) if (Failures.Count < MaxMessages) Failures.Add(f);
            Notes.AddRange(other.Notes);
        }
    }

    public string Line => $"{Name}: {Passed} passed, {Failed} failed";
    public override string ToString() => Line;
}

/// <summary>The bytes of a small image held in memory: metadata, data and backing.</summary>
public sealed class MemImage
{
    public required byte[] Meta { get; init; }
    public required byte[]? Data { get; init; }
    public required byte[]? Backing { get; init; }
    public required FvdHeader Header { get; init; }
    public const string PathName = "/nonexistent/mem.fvd";

    /// <summary>
    /// Builds a fresh, clean image the way FvdImage.Create lays it out (header, bitmap, sparse data file),
    /// with zero-aware marking of all-zero backing blocks. singleSlot: the older layout with one header copy.
    /// </summary>
    public static MemImage Build(long virtualSize, int blockSize, byte[]? backing, bool inline = false, bool zeroAware = true, bool singleSlot = false)
    {
        long backingSize = backing is null ? 0 : Math.Min(backing.Length, virtualSize);
        long blocks = backingSize > 0 ? FvdHeader.CeilDiv(backingSize, blockSize) : 0;
        long bitmapLen = FvdHeader.CeilDiv(blocks, 8);
        long headerArea = singleSlot ? FvdHeader.Size : HeaderSlots.Count * FvdHeader.Size;
        long metaEnd = MetadataRegions.EndOfBitmap(headerArea, bitmapLen);
        var header = new FvdHeader
        {
            Flags = HeaderFlags.CleanShutdown,
            Incompatible = (inline ? IncompatibleFeatures.InlineData : 0) | (singleSlot ? 0 : IncompatibleFeatures.TwoHeaderSlots),
            VirtualSize = virtualSize,
            BlockSize = blockSize,
            BackingSize = backingSize,
            BitmapOffset = bitmapLen > 0 ? headerArea : 0,
            BitmapLength = bitmapLen,
            DataOffset = inline ? metaEnd : 0,
            BackingFormat = backing is not null ? "raw" : "",
            BackingPath = backing is not null ? "backing.raw" : "",
            DataFile = inline ? "" : "mem.data",
        };
        long metaLen = inline ? metaEnd + virtualSize : metaEnd;
        header.Validate(metaLen);
        var meta = new byte[metaLen];
        HeaderSlots.Initial(header).CopyTo(meta, 0);
        if (blocks > 0)
        {
            var bm = new Bitmap(blocks);
            if (zeroAware && backing is not null)
                for (long b = 0; b < blocks; b++)
                {
                    long s = b * blockSize;
                    int n = (int)Math.Min(blockSize, backingSize - s);
                    if (DeviceChecks.IsZero(backing.AsSpan((int)s, n))) bm.SetRange(b, 1);
                }
            bm.ToBytes().CopyTo(meta, header.BitmapOffset);
        }
        return new MemImage { Meta = meta, Data = inline ? null : new byte[virtualSize], Backing = backing, Header = header };
    }

    /// <summary>Attaches over copies of the bytes (or over the given devices), deciding devices the way Open does.</summary>
    internal static FvdImage Attach(IBlockDevice meta, IBlockDevice? data, IBlockDevice? backing, bool readOnly)
        => FvdImage.Attach(PathName, meta, data, backing, backing is null ? null : "/nonexistent/backing.raw", readOnly);

    /// <summary>Random backing content: mostly random bytes, some all-zero blocks, some zero sectors.</summary>
    public static byte[] RandomBacking(Random rng, int length, int blockSize)
    {
        var b = new byte[length];
        rng.NextBytes(b);
        for (int off = 0; off < length; off += blockSize)
        {
            int n = Math.Min(blockSize, length - off);
            int r = rng.Next(8);
            if (r == 0) b.AsSpan(off, n).Clear();
            else if (r == 1) b.AsSpan(off, Math.Min(512, n)).Clear();
        }
        return b;
    }
}

internal static class Args
{
    public static string? Get(string[] args, string name)
    {
        for (int i = 0; i < args.Length - 1; i++) if (args[i] == name) return args[i + 1];
        return null;
    }

    public static long GetLong(string[] args, string name, long def) => Get(args, name) is { } s ? long.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : def;
    public static bool Has(string[] args, string name) => args.Contains(name);
}
