// Harness 4: hostile images (docs/architecture.md §5). A mutation fuzzer over valid images: header
// fields set to boundary values (in either header copy, or both), random byte flips with the CRC recomputed and not, bitmap bytes, truncated
// files, short data and backing devices. Each mutant is opened, mapped, read whole, written, flushed,
// closed and re-opened; it must work or fail with FvdException, never another exception, never take more
// than a second, never allocate more than a fixed cap. Plus the backing-path security checks.
using System.Buffers.Binary;
using System.Diagnostics;
using Fvd.Core;
using Fvd.Core.Format;
using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Reliability;

public sealed record Mutant(byte[] Meta, byte[]? Data, byte[]? Backing, string Description);

public sealed class HostileImageFuzzer
{
    public const long AllocationCap = 300L << 20;
    public static readonly TimeSpan SlowLimit = TimeSpan.FromSeconds(1);
    public static readonly TimeSpan HangLimit = TimeSpan.FromSeconds(10);

    /// <summary>Opens and exercises one mutant; the default is <see cref="Exercise"/>. Tests plant bugs here.</summary>
    public Action<Mutant> Exerciser { get; init; } = Exercise;

    private static readonly (int Off, int Size, string Name)[] Fields =
    {
        (8, 4, "version"), (12, 4, "header_size"), (16, 4, "crc"), (20, 4, "flags"), (24, 8, "incompatible"),
        (32, 8, "compatible"), (40, 8, "autoclear"), (48, 8, "virtual_size"), (56, 4, "block_size"), (60, 4, "reserved60"),
        (64, 8, "backing_size"), (72, 8, "bitmap_offset"), (80, 8, "bitmap_length"), (88, 8, "data_offset"),
        (96, 4, "prefetch_start_delay"), (100, 4, "prefetch_chunk"), (104, 4, "prefetch_min_read"), (108, 4, "prefetch_max_read"),
        (112, 4, "prefetch_min_write"), (116, 4, "prefetch_max_write"), (120, 4, "prefetch_throttle"), (124, 4, "max_outstanding_cor"),
        (128, 8, "table_offset"), (136, 8, "table_length"), (144, 8, "journal_offset"), (152, 8, "journal_length"),
        (160, 8, "snapshot_offset"), (192, 8, "hashes_offset"), (200, 8, "hashes_length"), (208, 8, "generation"),
    };

    private static List<MemImage> BaseImages(Random rng)
    {
        var list = new List<MemImage>
        {
            MemImage.Build(64 << 10, 4096, MemImage.RandomBacking(rng, (48 << 10) + 100, 4096)),
            MemImage.Build(32 << 10, 512, MemImage.RandomBacking(rng, 32 << 10, 512), inline: true),
            MemImage.Build(64 << 10, 1024, null),
            MemImage.Build(16 << 10, 4096, null, inline: true),
            MemImage.Build(40 << 10, 8192, MemImage.RandomBacking(rng, 64 << 10, 8192)),
            MemImage.Build(64 << 10, 4096, MemImage.RandomBacking(rng, 40 << 10, 4096), singleSlot: true),
        };
        // Some local blocks, as a used image has.
        foreach (var m in list)
            if (m.Header.BitmapLength > 0)
                for (long i = 0; i < m.Header.BitmapBlocks; i++)
                    if (rng.Next(3) == 0) m.Meta[m.Header.BitmapOffset + i / 8] |= (byte)(1 << (int)(i % 8));
        return list;
    }

    private static long[] Values64(long metaLen, long vsize) =>
    [
        0, 1, -1, long.MaxValue, long.MinValue, 512, 511, 4096, 4095, 8192, 1L << 40, 64L << 40, (64L << 40) + 512,
        metaLen, metaLen - 1, metaLen + 1, metaLen + 4096, 1L << 62, long.MaxValue / 512 + 1, long.MaxValue - 4095,
        vsize * 2, vsize + 512, vsize - 512, vsize / 2, 1L << 31, 1L << 32, (256L << 20) + 1, 256L << 20,
    ];

    private static readonly long[] Values32 =
    [
        0, 1, -1, int.MaxValue, int.MinValue, 512, 511, 513, 1024, 4096, 16 << 20, 32 << 20, 1L << 31, uint.MaxValue, 2, 3, 7, 255, 256,
    ];

    /// <summary>Recomputes the CRC of each header copy the mutant has.</summary>
    private static void FixCrc(byte[] meta, int slots)
    {
        for (int s = 0; s < slots; s++)
        {
            var h = meta.AsSpan((int)Math.Min(meta.Length, HeaderSlots.Offset(s)));
            if (h.Length < FvdHeader.Size) return;
            BinaryPrimitives.WriteUInt32LittleEndian(h[16..], 0);
            BinaryPrimitives.WriteUInt32LittleEndian(h[16..], Crc32C.Compute(h[..FvdHeader.Size]));
        }
    }

    /// <summary>Where a header mutation lands: copy 0, copy 1 (two-slot images), or both.</summary>
    private static int[] PickSlots(MemImage b, Random rng) => !b.Header.TwoSlots ? [0]
        : rng.Next(3) switch { 0 => [0], 1 => [FvdHeader.Size], _ => [0, FvdHeader.Size] };

    public static Mutant Mutate(MemImage b, Random rng)
    {
        var meta = (byte[])b.Meta.Clone();
        var data = b.Data is null ? null : (byte[])b.Data.Clone();
        var backing = b.Backing;
        var desc = new List<string>();
        int rounds = 1 + (rng.Next(4) == 0 ? rng.Next(3) : 0);
        bool fixCrc = true;
        for (int r = 0; r < rounds; r++)
        {
            switch (rng.Next(10))
            {
                case 0: case 1: case 2: case 3:
                {
                    var f = Fields[rng.Next(Fields.Length)];
                    long v;
                    if (rng.Next(6) == 0) v = rng.NextInt64();
                    else if (f.Size == 8) { var vs = Values64(meta.Length, b.Header.VirtualSize); v = vs[rng.Next(vs.Length)]; }
                    else v = Values32[rng.Next(Values32.Length)];
                    foreach (int slot in PickSlots(b, rng))
                    {
                        if (slot + f.Off + f.Size > meta.Length) break;
                        if (f.Size == 8) BinaryPrimitives.WriteInt64LittleEndian(meta.AsSpan(slot + f.Off), v);
                        else BinaryPrimitives.WriteUInt32LittleEndian(meta.AsSpan(slot + f.Off), unchecked((uint)v));
                        desc.Add($"copy at {slot}: {f.Name}={v}");
                    }
                    if (f.Name == "crc") fixCrc = false;
                    break;
                }
                case 4: case 5:
                {
                    int n = 1 + rng.Next(8);
                    var slots = PickSlots(b, rng);
                    for (int i = 0; i < n; i++)
                    {
                        int at = slots[rng.Next(slots.Length)] + rng.Next(rng.Next(2) == 0 ? 256 : FvdHeader.Size);
                        if (at >= meta.Length) continue;
                        byte bit = (byte)(1 << rng.Next(8));
                        meta[at] ^= bit;
                        desc.Add($"flip byte {at} ^0x{bit:x2}");
                    }
                    if (rng.Next(2) == 0) fixCrc = false;
                    break;
                }
                case 6:
                {
                    int field = new[] { 512, 1024, 2048 }[rng.Next(3)] + PickSlots(b, rng)[0];
                    int len = field == 512 ? 16 : 1024;
                    if (field + len > meta.Length) break;
                    int n = rng.Next(len + 1);
                    var s = meta.AsSpan(field, len);
                    s.Clear();
                    for (int i = 0; i < n; i++) s[i] = rng.Next(4) switch
                    {
                        0 => (byte)'.', 1 => (byte)'/', 2 => (byte)rng.Next(0x80, 0x100), _ => (byte)rng.Next(0x20, 0x7f),
                    };
                    if (rng.Next(4) == 0 && n < len) s[n] = (byte)'x'; // no terminator where expected
                    desc.Add($"string field {field} = {n} random bytes");
                    break;
                }
                case 7:
                    if (meta.Length > b.Header.HeaderArea)
                    {
                        int at = (int)b.Header.HeaderArea + rng.Next(meta.Length - (int)b.Header.HeaderArea);
                        meta[at] = (byte)rng.Next(256);
                        desc.Add($"meta byte {at} = random");
                    }
                    break;
                case 8:
                {
                    int len = rng.Next(3) switch { 0 => rng.Next(FvdHeader.Size + 1), 1 => rng.Next(meta.Length + 1), _ => Math.Max(0, meta.Length - 1 - rng.Next(512)) };
                    Array.Resize(ref meta, len);
                    desc.Add($"meta truncated to {len}");
                    break;
                }
                default:
                {
                    if (data is not null && rng.Next(2) == 0)
                    {
                        int len = rng.Next(data.Length + 1);
                        Array.Resize(ref data, len);
                        desc.Add($"data truncated to {len}");
                    }
                    else if (backing is not null)
                    {
                        int len = rng.Next(backing.Length + 1);
                        backing = backing.AsSpan(0, len).ToArray();
                        desc.Add($"backing truncated to {len}");
                    }
                    break;
                }
            }
        }
        if (fixCrc) FixCrc(meta, b.Header.TwoSlots ? HeaderSlots.Count : 1);
        else desc.Add("crc not recomputed");
        return new Mutant(meta, data, backing, string.Join(", ", desc));
    }

    /// <summary>
    /// Opens a mutant the way FvdImage.Open would over these devices (header read and validated, then the
    /// data and backing devices chosen from it), then maps, reads, writes, flushes, closes and re-opens it.
    /// </summary>
    public static void Exercise(Mutant m)
    {
        var h = HeaderSlots.Choose(m.Meta.Length >= FvdHeader.Size ? m.Meta : throw new FvdException(FvdErrorKind.InvalidFormat, "short"), m.Meta.Length).Header;
        var meta = new MemoryDevice((byte[])m.Meta.Clone());
        var dataBytes = m.Data is null ? null : (byte[])m.Data.Clone();
        for (int pass = 0; pass < 2; pass++)
        {
            bool ro = pass == 1;
            IBlockDevice? data = h.InlineData ? null : new MemoryDevice(dataBytes ?? [], ro);
            IBlockDevice? backing = h.HasBacking && (h.Flags & HeaderFlags.PrefetchFinished) == 0 && m.Backing is not null
                ? new MemoryDevice(m.Backing, readOnly: true) : null;
            var img = MemImage.Attach(ro ? new MemoryDevice(meta.Bytes, readOnly: true) : meta, data, backing, ro);
            try
            {
                int entries = 0;
                foreach (var e in img.Map())
                {
                    if (e.Length <= 0) throw new InvalidOperationException($"map returned an empty entry at {e.Offset}");
                    if (++entries > 1_000_000) throw new InvalidOperationException("map does not end");
                }
                var buf = new byte[64 << 10];
                for (long off = 0; off < img.Length; off += buf.Length)
                    img.Read(off, buf.AsSpan(0, (int)Math.Min(buf.Length, img.Length - off)));
                if (!ro)
                {
                    var rng = new Random((int)img.Length);
                    for (int i = 0; i < 4; i++)
                    {
                        long off = rng.NextInt64(img.Length);
                        int len = (int)Math.Min(img.Length - off, 1 + rng.Next(3 * img.BlockSize));
                        img.Write(off, buf.AsSpan(0, len));
                    }
                    img.Discard(0, Math.Min(img.Length, 1000));
                    img.Flush();
                }
            }
            finally
            {
                img.Dispose();
            }
        }
    }

    /// <summary>
    /// The file path: writes the mutant as NAME.fvd, mem.data and backing.raw in dir and opens it with
    /// FvdImage.Open (read-write, then read-only); reads are sampled, since a mutated size may be huge.
    /// </summary>
    public static void ExerciseFiles(Mutant m, string dir)
    {
        string meta = Path.Combine(dir, "m.fvd");
        File.WriteAllBytes(meta, m.Meta);
        File.WriteAllBytes(Path.Combine(dir, "mem.data"), m.Data ?? []);
        File.WriteAllBytes(Path.Combine(dir, "backing.raw"), m.Backing ?? []);
        try
        {
            for (int pass = 0; pass < 2; pass++)
            {
                using var img = FvdImage.Open(meta, new FvdOpenOptions { ReadOnly = pass == 1 });
                int entries = 0;
                foreach (var e in img.Map())
                    if (++entries > 1000) break;
                var buf = new byte[16 << 10];
                var rng = new Random(7);
                foreach (long at in new[] { 0, img.Length - 1, img.Length / 2, rng.NextInt64(img.Length), rng.NextInt64(img.Length) })
                {
                    long off = Math.Max(0, Math.Min(at, img.Length - buf.Length));
                    img.Read(off, buf.AsSpan(0, (int)Math.Min(buf.Length, img.Length - off)));
                    if (pass == 0) img.Write(off, buf.AsSpan(0, (int)Math.Min(100, img.Length - off)));
                }
                if (pass == 0) img.Flush();
            }
        }
        finally
        {
            foreach (var f in Directory.GetFiles(dir)) File.Delete(f);
        }
    }

    /// <summary>Every n-th mutant also goes through the file path (FvdImage.Open); 0 = never.</summary>
    public int FileEvery { get; init; } = 50;

    public HarnessResult Run(int seed, int count)
    {
        string fileDir = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), $"fvd-fuzz-{Environment.ProcessId}-{seed}");
        Directory.CreateDirectory(fileDir);
        try
        {
            return RunIn(seed, count, fileDir);
        }
        finally
        {
            Directory.Delete(fileDir, recursive: true);
        }
    }

    private HarnessResult RunIn(int seed, int count, string fileDir)
    {
        var result = new HarnessResult("fuzzed-images");
        var bases = BaseImages(new Random(seed));
        long opened = 0, filesTried = 0, filesOpened = 0;
        int caseNo = 0;
        MutantRunner.Run(result, seed, count, rng =>
        {
            int i = caseNo++;
            var b = bases[rng.Next(bases.Count)];
            Mutant m = Mutate(b, rng);
            return new FuzzCase($"base {bases.IndexOf(b)}; {m.Description}", () =>
            {
                bool ok = false;
                string? fail = MutantRunner.Refusal(() => { Exerciser(m); ok = true; });
                if (ok) opened++;
                if (fail is null && FileEvery > 0 && i % FileEvery == 0)
                {
                    filesTried++;
                    bool fileOk = false;
                    fail = MutantRunner.Refusal(() => { ExerciseFiles(m, fileDir); fileOk = true; }, "FvdImage.Open path: ");
                    if (fileOk) filesOpened++;
                }
                return fail;
            });
        });
        result.Notes.Add($"fuzzed-images: {opened} of {count} mutants opened and worked; the rest were refused with FvdException; {filesOpened} of {filesTried} also opened through FvdImage.Open on files");
        return result;
    }
}
