using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Core.Tests;

/// <summary>
/// The contract every IBlockDevice keeps (docs/architecture.md §7). Each implementation inherits this class
/// and says how to make a writable device (with whatever initial content it has) and a read-only one.
/// The expected content is read through the device first and then tracked in a flat array.
/// </summary>
public abstract class BlockDeviceContract : IDisposable
{
    protected const long DeviceLength = 192 * 1024 + 3 * 512; // not a multiple of 4096 nor of a block
    protected readonly TempDir Dir = new();
    private readonly List<IDisposable> _owned = new();

    /// <summary>A writable device of DeviceLength bytes.</summary>
    protected abstract IBlockDevice CreateDevice();

    /// <summary>A read-only device of DeviceLength bytes, or null when the implementation has none.</summary>
    protected abstract IBlockDevice? CreateReadOnlyDevice();

    /// <summary>Reopens the device made by CreateDevice after it was disposed, when that is meaningful.</summary>
    protected virtual IBlockDevice? Reopen() => null;

    protected T Own<T>(T d) where T : IDisposable { _owned.Add(d); return d; }

    public void Dispose()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        Dir.Dispose();
        GC.SuppressFinalize(this);
    }

    private static byte[] ReadAll(IBlockDevice d)
    {
        var b = new byte[d.Length];
        d.Read(0, b);
        return b;
    }

    private static void AssertContent(byte[] expected, IBlockDevice d, string what)
    {
        var got = ReadAll(d);
        int p = got.AsSpan().CommonPrefixLength(expected);
        Assert.True(p == expected.Length, $"{what}: content differs at byte {p}");
    }

    // (offset, length) pairs: odd offsets and lengths, sector and block straddles, the very end.
    public static readonly (long Off, int Len)[] Requests =
    {
        (0, 1), (1, 3), (511, 2), (513, 511), (4095, 4098), (4096, 4096), (7000, 12345), (65535, 65539),
        (DeviceLength - 1, 1), (DeviceLength - 4097, 4097), (100_001, 17), (131_072 - 3, 6), (0, 512),
    };

    [Fact]
    public void LengthIsAsCreated()
    {
        var d = CreateDevice();
        Assert.Equal(DeviceLength, d.Length);
        Assert.False(d.IsReadOnly);
    }

    [Fact]
    public void WritesAtOddOffsetsReadBack()
    {
        var d = CreateDevice();
        var model = ReadAll(d);
        var rng = new Random(42);
        foreach (var (off, len) in Requests)
        {
            var data = new byte[len];
            rng.NextBytes(data);
            d.Write(off, data);
            data.CopyTo(model, off);
            var got = new byte[len];
            d.Read(off, got);
            Assert.Equal(data, got);
            // A read that straddles the written range sees the neighbours unchanged.
            long s = Math.Max(0, off - 700), e = Math.Min(d.Length, off + len + 700);
            var around = new byte[e - s];
            d.Read(s, around);
            Assert.True(around.AsSpan().SequenceEqual(model.AsSpan((int)s, (int)(e - s))), $"around [{off},+{len})");
        }
        AssertContent(model, d, "after writes");
    }

    [Fact]
    public void RandomOperationsMatchModel()
    {
        var d = CreateDevice();
        var model = ReadAll(d);
        var rng = new Random(7);
        for (int i = 0; i < 300; i++)
        {
            long off = rng.NextInt64(d.Length);
            int len = (int)Math.Min(d.Length - off, rng.Next(4) == 0 ? rng.Next(0, 20000) : rng.Next(0, 1500));
            switch (rng.Next(6))
            {
                case 0: case 1:
                    var data = new byte[len];
                    rng.NextBytes(data);
                    d.Write(off, data);
                    data.CopyTo(model, off);
                    break;
                case 2:
                    d.Discard(off, len);
                    Array.Clear(model, (int)off, len);
                    break;
                case 3:
                    d.WriteZeroes(off, len);
                    Array.Clear(model, (int)off, len);
                    break;
                case 4:
                    d.Flush();
                    break;
                default:
                    var got = new byte[len];
                    d.Read(off, got);
                    Assert.True(got.AsSpan().SequenceEqual(model.AsSpan((int)off, len)), $"step {i}: read [{off},+{len})");
                    break;
            }
        }
        AssertContent(model, d, "final");
    }

    [Fact]
    public void DiscardAndWriteZeroesReadBackZeros()
    {
        var d = CreateDevice();
        var fill = new byte[d.Length];
        new Random(3).NextBytes(fill);
        d.Write(0, fill);
        d.Discard(1000, 70000);        // unaligned both ends
        d.WriteZeroes(90001, 9999);
        d.Discard(131072, 65536);      // aligned
        d.WriteZeroes(d.Length - 513, 513);
        Array.Clear(fill, 1000, 70000);
        Array.Clear(fill, 90001, 9999);
        Array.Clear(fill, 131072, 65536);
        Array.Clear(fill, (int)d.Length - 513, 513);
        AssertContent(fill, d, "after discard/zero");
        d.Flush();
        AssertContent(fill, d, "after flush");
        d.Discard(0, d.Length);
        AssertContent(new byte[d.Length], d, "after discarding everything");
    }

    [Fact]
    public void FlushKeepsContentAndSurvivesReopen()
    {
        var d = CreateDevice();
        var model = ReadAll(d);
        var data = new byte[10000];
        new Random(5).NextBytes(data);
        d.Write(12345, data);
        data.CopyTo(model, 12345);
        d.Flush();
        d.Flush(); // idempotent
        AssertContent(model, d, "after flush");
        d.Dispose();
        var r = Reopen();
        if (r is null) return;
        Own(r);
        AssertContent(model, r, "after reopen");
    }

    [Fact]
    public void ZeroLengthOperationsAreAccepted()
    {
        var d = CreateDevice();
        var before = ReadAll(d);
        foreach (long off in new[] { 0, 1, 4096, d.Length - 1, d.Length })
        {
            d.Read(off, Span<byte>.Empty);
            d.Write(off, ReadOnlySpan<byte>.Empty);
            d.Discard(off, 0);
            d.WriteZeroes(off, 0);
        }
        AssertContent(before, d, "after zero-length ops");
    }

    public static IEnumerable<object[]> BadRanges()
    {
        yield return new object[] { -1L, 1L };
        yield return new object[] { -1L, 0L };
        yield return new object[] { DeviceLength, 1L };
        yield return new object[] { DeviceLength - 1, 2L };
        yield return new object[] { DeviceLength + 1, 0L };
        yield return new object[] { 0L, DeviceLength + 1 };
        yield return new object[] { 4096L, -1L };
        yield return new object[] { long.MaxValue, 1L };
        yield return new object[] { long.MinValue, 1L };
        yield return new object[] { 1L, long.MaxValue };
    }

    [Theory]
    [MemberData(nameof(BadRanges))]
    public void OutOfRangeIsOutOfBounds(long off, long len)
    {
        var d = CreateDevice();
        var before = ReadAll(d);
        void Check(Action a, string what)
        {
            var e = Assert.Throws<FvdException>(a);
            Assert.True(e.Kind == FvdErrorKind.OutOfBounds, $"{what} [{off},+{len}): kind {e.Kind}: {e.Message}");
            Assert.Contains("outside", e.Message);
        }
        Check(() => d.Discard(off, len), "discard");
        Check(() => d.WriteZeroes(off, len), "write zeroes");
        if (len is >= 0 and <= 1 << 20)
        {
            var buf = new byte[len];
            Check(() => d.Read(off, buf), "read");
            Check(() => d.Write(off, buf), "write");
        }
        AssertContent(before, d, "unchanged after refused requests");
    }

    [Fact]
    public void GetExtentOutOfRangeIsOutOfBounds()
    {
        var d = CreateDevice();
        foreach (long off in new[] { -1, d.Length, d.Length + 4096, long.MaxValue })
            Assert.Equal(FvdErrorKind.OutOfBounds, Assert.Throws<FvdException>(() => d.GetExtent(off, 4096)).Kind);
    }

    [Fact]
    public void ReadOnlyRefusesModification()
    {
        var d = CreateReadOnlyDevice();
        if (d is null) return;
        Own(d);
        Assert.True(d.IsReadOnly);
        Assert.Equal(DeviceLength, d.Length);
        var before = ReadAll(d);
        void Check(Action a, string what)
        {
            var e = Assert.Throws<FvdException>(a);
            Assert.True(e.Kind == FvdErrorKind.ReadOnly, $"{what}: kind {e.Kind}: {e.Message}");
            Assert.Contains("read-only", e.Message);
        }
        Check(() => d.Write(0, new byte[1]), "write");
        Check(() => d.Write(4097, new byte[9000]), "write");
        Check(() => d.Discard(0, 4096), "discard");
        Check(() => d.WriteZeroes(512, 100), "write zeroes");
        d.Flush(); // allowed, does nothing
        AssertContent(before, d, "unchanged");
        d.GetExtent(0, d.Length);
    }

    /// <summary>Walks GetExtent over the device; checks coverage, limits, and that Zero extents read as zeros.</summary>
    private static List<Extent> Walk(IBlockDevice d, long maxLength)
    {
        var list = new List<Extent>();
        long pos = 0;
        while (pos < d.Length)
        {
            var e = d.GetExtent(pos, maxLength);
            Assert.Equal(pos, e.Offset);
            Assert.True(e.Length > 0, $"empty extent at {pos}");
            Assert.True(e.Length <= maxLength, $"extent at {pos} longer ({e.Length}) than asked ({maxLength})");
            Assert.True(e.End <= d.Length, $"extent at {pos} runs past the end");
            if (e.Kind == ExtentKind.Zero)
            {
                var b = new byte[e.Length];
                d.Read(e.Offset, b);
                Assert.True(DeviceChecks.IsZero(b), $"Zero extent [{e.Offset},+{e.Length}) has data at {e.Offset + b.AsSpan().IndexOfAnyExcept((byte)0)}");
            }
            list.Add(e);
            pos = e.End;
        }
        return list;
    }

    [Fact]
    public void GetExtentCoversDeviceConsistently()
    {
        var d = CreateDevice();
        var data = new byte[8192];
        new Random(9).NextBytes(data);
        d.Write(4096, data);
        d.Discard(65536, 65536);
        d.WriteZeroes(150_000, 10_000);
        d.Write(d.Length - 100, data.AsSpan(0, 100));
        foreach (long max in new[] { d.Length, 4096L, 1000L, 511L, long.MaxValue, long.MaxValue - 10 })
        {
            List<Extent> list;
            try { list = Walk(d, max); }
            catch (Exception e) { throw new Xunit.Sdk.XunitException($"maxLength {max}: {e.Message}"); }
            Assert.Equal(d.Length, list.Sum(e => e.Length));
        }
        // Written data is never reported as Zero.
        var x = d.GetExtent(4096, 8192);
        Assert.Equal(ExtentKind.Data, x.Kind);
        var last = d.GetExtent(d.Length - 1, 1);
        Assert.Equal(ExtentKind.Data, last.Kind);
        Assert.Equal(1, last.Length);
        // An extent starting mid-way is consistent too.
        foreach (long off in new long[] { 1, 4097, 65537, 150_001, d.Length - 2 })
        {
            var e = d.GetExtent(off, d.Length);
            Assert.Equal(off, e.Offset);
            Assert.True(e.Length > 0 && e.End <= d.Length);
        }
    }
}

public sealed class MemoryDeviceContract : BlockDeviceContract
{
    protected override IBlockDevice CreateDevice()
    {
        var b = new byte[DeviceLength];
        new Random(1).NextBytes(b);
        return Own(new MemoryDevice(b));
    }

    protected override IBlockDevice? CreateReadOnlyDevice() => new MemoryDevice(new byte[DeviceLength], readOnly: true);
}

public sealed class FileDeviceContract : BlockDeviceContract
{
    private string FilePath => Dir.File("dev.img");

    protected override IBlockDevice CreateDevice()
    {
        var d = Own(FileDevice.Create(FilePath, DeviceLength));
        var b = new byte[DeviceLength / 2];
        new Random(1).NextBytes(b);
        d.Write(4096, b); // data in the middle, holes at both ends
        return d;
    }

    protected override IBlockDevice? CreateReadOnlyDevice()
    {
        using (FileDevice.Create(FilePath, DeviceLength)) { }
        return FileDevice.Open(FilePath, readOnly: true);
    }

    protected override IBlockDevice? Reopen() => FileDevice.Open(FilePath, readOnly: false);

    [Fact]
    public void CreateRefusesExistingFileAndOpenMissingIsNotFound()
    {
        CreateDevice();
        Assert.ThrowsAny<FvdException>(() => FileDevice.Create(FilePath, 4096));
        var e = Assert.Throws<FvdException>(() => FileDevice.Open(Dir.File("missing"), true));
        Assert.Equal(FvdErrorKind.NotFound, e.Kind);
    }

    [Fact]
    public void HoleIsReportedZero()
    {
        var d = CreateDevice();
        var e = d.GetExtent(0, d.Length);
        Assert.Equal(ExtentKind.Zero, e.Kind); // the first 4096 bytes were never written
        Assert.Equal(4096, e.Length);
    }
}

public sealed class SliceDeviceContract : BlockDeviceContract
{
    private const int Pad = 777;
    private MemoryDevice? _inner;

    protected override IBlockDevice CreateDevice()
    {
        var b = new byte[DeviceLength + 2 * Pad];
        new Random(2).NextBytes(b);
        _inner = new MemoryDevice(b);
        return Own(new SliceDevice(_inner, Pad, DeviceLength));
    }

    protected override IBlockDevice? CreateReadOnlyDevice() =>
        new SliceDevice(new MemoryDevice(new byte[DeviceLength + 2 * Pad], readOnly: true), Pad, DeviceLength);

    [Fact]
    public void BytesOutsideTheWindowAreUntouched()
    {
        var d = CreateDevice();
        var before = (byte[])_inner!.Bytes.Clone();
        d.Write(0, new byte[DeviceLength]);
        d.Discard(0, DeviceLength);
        Assert.Equal(before[..Pad], _inner.Bytes[..Pad]);
        Assert.Equal(before[^Pad..], _inner.Bytes[^Pad..]);
        Assert.True(DeviceChecks.IsZero(_inner.Bytes.AsSpan(Pad, (int)DeviceLength)));
    }

    [Fact]
    public void SliceOutsideInnerIsRefused()
    {
        var inner = new MemoryDevice(4096);
        Assert.Equal(FvdErrorKind.OutOfBounds, Assert.Throws<FvdException>(() => new SliceDevice(inner, 1, 4096)).Kind);
        Assert.Equal(FvdErrorKind.OutOfBounds, Assert.Throws<FvdException>(() => new SliceDevice(inner, -1, 10)).Kind);
    }
}

/// <summary>Shared set-up for the image variants.</summary>
public abstract class FvdImageContract : BlockDeviceContract
{
    protected string ImagePath => Dir.File("t.fvd");
    protected abstract FvdCreateOptions Options();
    protected virtual void PrepareBacking() { }

    protected override IBlockDevice CreateDevice()
    {
        PrepareBacking();
        FvdImage.Create(ImagePath, Options());
        return Own(FvdImage.Open(ImagePath));
    }

    protected override IBlockDevice? CreateReadOnlyDevice()
    {
        PrepareBacking();
        FvdImage.Create(ImagePath, Options());
        return FvdImage.Open(ImagePath, new FvdOpenOptions { ReadOnly = true });
    }

    protected override IBlockDevice? Reopen() => FvdImage.Open(ImagePath);

    /// <summary>A raw backing of 100,000 bytes (not a multiple of 4096): random data, a zero run, a hole tail.</summary>
    protected void WriteBacking(string name)
    {
        var b = new byte[100_000];
        new Random(11).NextBytes(b);
        Array.Clear(b, 20_000, 12_288);
        Array.Clear(b, 90_000, 10_000);
        File.WriteAllBytes(Dir.File(name), b);
    }
}

public sealed class FvdImageNoBackingContract : FvdImageContract
{
    protected override FvdCreateOptions Options() => new() { VirtualSize = DeviceLength, BlockSize = 4096 };
}

public sealed class FvdImageRawBackingContract : FvdImageContract
{
    protected override void PrepareBacking() => WriteBacking("base.raw");
    protected override FvdCreateOptions Options() => new() { VirtualSize = DeviceLength, BackingFile = "base.raw", BlockSize = 4096 };
}

public sealed class FvdImageRawBackingNoZeroAwareContract : FvdImageContract
{
    protected override void PrepareBacking() => WriteBacking("base.raw");
    protected override FvdCreateOptions Options() => new() { VirtualSize = DeviceLength, BackingFile = "base.raw", BlockSize = 512, ZeroAware = false };
}

public sealed class FvdImageInlineContract : FvdImageContract
{
    protected override void PrepareBacking() => WriteBacking("base.raw");
    protected override FvdCreateOptions Options() => new() { VirtualSize = DeviceLength, BackingFile = "base.raw", BlockSize = 8192, InlineData = true };
}
