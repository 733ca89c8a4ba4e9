// Harness 3: a file exerciser in the fsx method (after xfstests ltp/fsx.c; src/Fvd.Reliability/README.md). Random reads,
// writes, punch-holes, zero-ranges, fsyncs and close/reopen against any file, with a shadow copy in memory;
// every read is verified; seeded; on a mismatch the recent operation log is printed and the run stops.
using System.Runtime.InteropServices;
using Fvd.Core.Io;
using Fvd.Core.Image;

namespace Fvd.Reliability;

/// <summary>What the exerciser drives: a file of fixed size.</summary>
public interface IFsxTarget : IDisposable
{
    long Length { get; }
    void Read(long offset, Span<byte> buffer);
    void Write(long offset, ReadOnlySpan<byte> buffer);
    /// <summary>fallocate(PUNCH_HOLE|KEEP_SIZE); false when the file system does not support it.</summary>
    bool PunchHole(long offset, long length);
    /// <summary>fallocate(ZERO_RANGE|KEEP_SIZE); false when not supported.</summary>
    bool ZeroRange(long offset, long length);
    void Fsync();
    void Reopen();
}

/// <summary>A host file (or FUSE file) driven through libc pread/pwrite/fallocate, optionally with O_DIRECT.</summary>
public sealed unsafe class PosixFileTarget : IFsxTarget
{
    private readonly string _path;
    private readonly bool _direct;
    private int _fd = -1;
    private byte* _bounce;
    private const int BounceSize = 1 << 20;

    public PosixFileTarget(string path, bool direct, long createSize = 0)
    {
        _path = path;
        _direct = direct;
        if (!File.Exists(path))
        {
            if (createSize <= 0) throw new ArgumentException($"{path} does not exist (give --size to create it)");
            using (var fs = new FileStream(path, FileMode.CreateNew)) fs.SetLength(createSize);
        }
        if (direct) _bounce = (byte*)NativeMemory.AlignedAlloc(BounceSize, 4096);
        Open();
        Length = new FileInfo(path).Length;
        if (Length == 0)
        {
            // Not a regular file (a device or a FUSE file reporting no size): ask lseek.
            Length = checked((long)RandomAccess.GetLength(File.OpenHandle(path)));
        }
    }

    public long Length { get; }
    public int Alignment => _direct ? 4096 : 1;

    private void Open()
    {
        _fd = Libc.open(_path, Libc.O_RDWR | (_direct ? Libc.O_DIRECT : 0), 0);
        if (_fd < 0) throw Libc.Error("open", _path);
    }

    public void Read(long offset, Span<byte> buffer)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = Math.Min(buffer.Length - done, BounceSize);
            nint r;
            if (_direct) r = Libc.pread(_fd, _bounce, (nuint)n, offset + done);
            else fixed (byte* p = buffer[done..]) r = Libc.pread(_fd, p, (nuint)n, offset + done);
            if (r < 0) { if (Marshal.GetLastPInvokeError() == Libc.EINTR) continue; throw Libc.Error("pread", _path); }
            if (r == 0) throw new IOException($"pread {_path}: unexpected end of file at {offset + done}");
            if (_direct) new ReadOnlySpan<byte>(_bounce, (int)r).CopyTo(buffer[done..]);
            done += (int)r;
        }
    }

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = Math.Min(buffer.Length - done, BounceSize);
            nint r;
            if (_direct)
            {
                buffer.Slice(done, n).CopyTo(new Span<byte>(_bounce, n));
                r = Libc.pwrite(_fd, _bounce, (nuint)n, offset + done);
            }
            else fixed (byte* p = buffer[done..]) r = Libc.pwrite(_fd, p, (nuint)n, offset + done);
            if (r < 0) { if (Marshal.GetLastPInvokeError() == Libc.EINTR) continue; throw Libc.Error("pwrite", _path); }
            if (r == 0) throw new IOException($"pwrite {_path}: wrote nothing at {offset + done}");
            done += (int)r;
        }
    }

    private bool Fallocate(int mode, long offset, long length, string what)
    {
        while (true)
        {
            if (Libc.fallocate(_fd, mode | Libc.FALLOC_FL_KEEP_SIZE, offset, length) == 0) return true;
            int e = Marshal.GetLastPInvokeError();
            if (e == Libc.EINTR) continue;
            if (e is Libc.EOPNOTSUPP or Libc.ENOSYS) return false;
            throw Libc.Error($"fallocate({what})", _path);
        }
    }

    public bool PunchHole(long offset, long length) => Fallocate(Libc.FALLOC_FL_PUNCH_HOLE, offset, length, "punch hole");
    public bool ZeroRange(long offset, long length) => Fallocate(Libc.FALLOC_FL_ZERO_RANGE, offset, length, "zero range");

    public void Fsync()
    {
        if (Mono.Unix.Native.Syscall.fsync(_fd) != 0) throw Libc.Error("fsync", _path);
    }

    public void Reopen()
    {
        if (Libc.close(_fd) != 0) throw Libc.Error("close", _path);
        Open();
    }

    public void Dispose()
    {
        if (_fd >= 0) Libc.close(_fd);
        _fd = -1;
        if (_bounce != null) NativeMemory.AlignedFree(_bounce);
        _bounce = null;
    }
}

/// <summary>An FVD image driven in-process: punch = Discard, zero = WriteZeroes, fsync = Flush, reopen = close + Open.</summary>
public sealed class FvdImageTarget : IFsxTarget
{
    private readonly string _path;
    private FvdImage _img;

    public FvdImageTarget(string path)
    {
        _path = path;
        _img = FvdImage.Open(path);
    }

    public long Length => _img.Length;
    public void Read(long offset, Span<byte> buffer) => _img.Read(offset, buffer);
    public void Write(long offset, ReadOnlySpan<byte> buffer) => _img.Write(offset, buffer);
    public bool PunchHole(long offset, long length) { _img.Discard(offset, length); return true; }
    public bool ZeroRange(long offset, long length) { _img.WriteZeroes(offset, length); return true; }
    public void Fsync() => _img.Flush();

    public void Reopen()
    {
        _img.Dispose();
        _img = FvdImage.Open(_path);
    }

    public void Dispose() => _img.Dispose();
}

/// <summary>Planted bug: flips one byte of the n-th write on its way to the file.</summary>
public sealed class CorruptingTarget(IFsxTarget inner, int corruptWriteNumber) : IFsxTarget
{
    private int _writes;
    public long Length => inner.Length;
    public void Read(long offset, Span<byte> buffer) => inner.Read(offset, buffer);

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        if (++_writes == corruptWriteNumber && buffer.Length > 0)
        {
            var copy = buffer.ToArray();
            copy[copy.Length / 2] ^= 0x5a;
            inner.Write(offset, copy);
            return;
        }
        inner.Write(offset, buffer);
    }

    public bool PunchHole(long offset, long length) => inner.PunchHole(offset, length);
    public bool ZeroRange(long offset, long length) => inner.ZeroRange(offset, length);
    public void Fsync() => inner.Fsync();
    public void Reopen() => inner.Reopen();
    public void Dispose() => inner.Dispose();
}

public sealed class FileExerciser
{
    public int MaxOpLength { get; init; } = 64 << 10;
    /// <summary>Offsets and lengths are multiples of this (4096 for O_DIRECT).</summary>
    public int Alignment { get; init; } = 1;
    public string Name { get; init; } = "fsx";
    public Action<string>? Log { get; init; }

    /// <summary>Runs ops operations; passed = operations completed and verified; stops at the first mismatch.</summary>
    public HarnessResult Run(IFsxTarget t, long ops, int seed, string label)
    {
        var result = new HarnessResult(Name);
        var rng = new Random(seed);
        long size = t.Length / Alignment * Alignment;
        if (size <= 0) { result.Fail($"{label}: file is empty"); return result; }
        var shadow = new byte[size];
        t.Read(0, shadow);
        var log = new Queue<string>();
        bool punchOk = true, zeroOk = true;
        var buf = new byte[MaxOpLength];
        long done = 0;
        void Note(string s) { if (log.Count == 64) log.Dequeue(); log.Enqueue(s); }
        bool Mismatch(long op, long off, ReadOnlySpan<byte> got, ReadOnlySpan<byte> expect, string what)
        {
            int i = got.CommonPrefixLength(expect);
            if (i == got.Length) return false;
            int bad = 0;
            for (int k = i; k < got.Length; k++) if (got[k] != expect[k]) bad++;
            result.Fail($"{label} seed {seed}: op {op} ({what}): mismatch at offset {off + i} (0x{off + i:x}): read 0x{got[i]:x2}, expected 0x{expect[i]:x2}; {bad} bytes differ. "
                + $"Replay: fvd-reliability fsx --path FILE --ops {op + 1} --seed {seed}{(Alignment > 1 ? " --direct" : "")}. Last ops:\n    " + string.Join("\n    ", log));
            return true;
        }
        (long off, int len) Range()
        {
            long units = size / Alignment;
            long off = rng.NextInt64(units) * Alignment;
            int maxLen = (int)Math.Min(MaxOpLength, size - off);
            int len = Math.Max(Alignment, rng.Next(1, maxLen + 1) / Alignment * Alignment);
            return (off, len);
        }
        try
        {
            for (long op = 0; op < ops; op++)
            {
                int r = rng.Next(100);
                var (off, len) = Range();
                if (r < 38)
                {
                    Note($"{op}: read  0x{off:x} +0x{len:x}");
                    var b = buf.AsSpan(0, len);
                    t.Read(off, b);
                    if (Mismatch(op, off, b, shadow.AsSpan((int)off, len), "read")) return result;
                }
                else if (r < 78)
                {
                    Note($"{op}: write 0x{off:x} +0x{len:x}");
                    var b = buf.AsSpan(0, len);
                    rng.NextBytes(b);
                    if (rng.Next(8) == 0) b[..Math.Min(len, 512)].Clear();
                    t.Write(off, b);
                    b.CopyTo(shadow.AsSpan((int)off));
                }
                else if (r < 88)
                {
                    Note($"{op}: punch 0x{off:x} +0x{len:x}{(punchOk ? "" : " (skipped: unsupported)")}");
                    if (punchOk && !t.PunchHole(off, len)) { punchOk = false; result.Notes.Add($"{label}: punch hole not supported; skipped"); }
                    else if (punchOk) shadow.AsSpan((int)off, len).Clear();
                }
                else if (r < 97)
                {
                    Note($"{op}: zero  0x{off:x} +0x{len:x}{(zeroOk ? "" : " (skipped: unsupported)")}");
                    if (zeroOk && !t.ZeroRange(off, len)) { zeroOk = false; result.Notes.Add($"{label}: zero range not supported; skipped"); }
                    else if (zeroOk) shadow.AsSpan((int)off, len).Clear();
                }
                else if (r < 98)
                {
                    Note($"{op}: fsync");
                    t.Fsync();
                }
                else
                {
                    Note($"{op}: close/reopen + full verify");
                    t.Reopen();
                    if (VerifyAll(t, shadow, op, Mismatch)) return result;
                }
                done++;
            }
            if (VerifyAll(t, shadow, ops, Mismatch)) return result;
        }
        catch (Exception e) when (e is IOException or Fvd.Core.FvdException)
        {
            result.Fail($"{label} seed {seed}: op {done}: {e.GetType().Name}: {e.Message}. Last ops:\n    " + string.Join("\n    ", log));
            return result;
        }
        result.Pass(done);
        return result;
    }

    private delegate bool MismatchFn(long op, long off, ReadOnlySpan<byte> got, ReadOnlySpan<byte> expect, string what);

    private static bool VerifyAll(IFsxTarget t, byte[] shadow, long op, MismatchFn mismatch)
    {
        var chunk = new byte[1 << 20];
        for (long off = 0; off < shadow.Length; off += chunk.Length)
        {
            int n = (int)Math.Min(chunk.Length, shadow.Length - off);
            t.Read(off, chunk.AsSpan(0, n));
            if (mismatch(op, off, chunk.AsSpan(0, n), shadow.AsSpan((int)off, n), "full verify")) return true;
        }
        return false;
    }

    /// <summary>Creates a COW image in dir over a random backing file (the exposed-file case in-process).</summary>
    public static string MakeImage(string dir, int seed, long size)
    {
        var rng = new Random(seed);
        string backing = Path.Combine(dir, "base.raw");
        File.WriteAllBytes(backing, MemImage.RandomBacking(rng, (int)(size * 3 / 4), 4096));
        string img = Path.Combine(dir, "disk.fvd");
        FvdImage.Create(img, new FvdCreateOptions { VirtualSize = size, BackingFile = "base.raw", BlockSize = 4096, Overwrite = true });
        return img;
    }
}
