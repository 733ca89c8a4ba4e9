// Harness 4b: hostile qcow2 files (the qcow2 reader, src/Fvd.Core/Qcow2). A mutation fuzzer over small
// images qemu-img makes at start (v3 with zlib, compressed and zero clusters; v2 with 4 KiB clusters;
// extended L2 with zstd; an image over a qcow2 backing): header fields set to boundary values, bit flips
// in the header and extensions, L1/L2 entries replaced, compressed bytes flipped, files truncated. Each
// mutant is opened over memory, read (whole when small, sampled otherwise) and its extents walked; it
// must work or fail with FvdException, never another exception, never take more than a second, never
// allocate more than a fixed cap. "passed" = read fine or refused with FvdException.
using System.Buffers.Binary;
using System.Diagnostics;
using Fvd.Core;
using Fvd.Core.Io;
using Fvd.Core.Qcow2;

namespace Fvd.Reliability;

public sealed record Qcow2Mutant(byte[] File, byte[]? Backing, string Description);

public sealed class Qcow2Fuzzer
{
    /// <summary>Opens and exercises one mutant; the default is <see cref="Exercise"/>. Tests plant bugs here.</summary>
    public Action<Qcow2Mutant> Exerciser { get; init; } = Exercise;

    private static readonly (int Off, int Size, string Name)[] Fields =
    {
        (4, 4, "version"), (8, 8, "backing_file_offset"), (16, 4, "backing_file_size"), (20, 4, "cluster_bits"),
        (24, 8, "size"), (32, 4, "crypt_method"), (36, 4, "l1_size"), (40, 8, "l1_table_offset"),
        (48, 8, "refcount_table_offset"), (56, 4, "refcount_table_clusters"), (60, 4, "nb_snapshots"),
        (72, 8, "incompatible_features"), (96, 4, "refcount_order"), (100, 4, "header_length"), (104, 1, "compression_type"),
    };

    private static readonly ulong[] Values =
    [
        0, 1, 2, 3, 7, 8, 9, 12, 14, 16, 21, 22, 31, 63, 64, 72, 104, 105, 112, 511, 512, 4096, 65535, 65536, 1UL << 20,
        1UL << 31, 1UL << 32, 1UL << 40, 1UL << 62, 1UL << 63, ulong.MaxValue, long.MaxValue, uint.MaxValue, 0x7fffffff,
    ];

    /// <summary>A base image: the file, its backing (or null) and where its tables are.</summary>
    public sealed record Base(string Name, byte[] File, byte[]? Backing, long L1Offset, long L2Offset, int ClusterSize);

    /// <summary>Makes the base images with qemu-img/qemu-io in a temporary directory.</summary>
    public static List<Base> MakeBases()
    {
        string dir = Directory.CreateTempSubdirectory("fvd-fuzz-qcow2-").FullName;
        try
        {
            string P(string n) => Path.Combine(dir, n);
            Run("qemu-img", "create", "-q", "-f", "qcow2", P("zlib.qcow2"), "1M");
            Run("qemu-io", "-f", "qcow2", "-c", "write -P 7 1000 70000", "-c", "write -c -P 9 256k 64k", "-c", "write -z 512k 64k", P("zlib.qcow2"));
            Run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4096", P("v2.qcow2"), "1M");
            Run("qemu-io", "-f", "qcow2", "-c", "write -P 5 0 10000", "-c", "write -c -P 6 64k 4k", "-c", "write -P 8 900k 5000", P("v2.qcow2"));
            Run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,compression_type=zstd,cluster_size=16k", P("ext.qcow2"), "1M");
            Run("qemu-io", "-f", "qcow2", "-c", "write -P 3 700 3000", "-c", "write -z 8k 2k", "-c", "write -c -P 4 128k 16k", P("ext.qcow2"));
            Run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "v2.qcow2", "-F", "qcow2", P("top.qcow2"), "1M");
            Run("qemu-io", "-f", "qcow2", "-c", "write -P 1 5000 100000", P("top.qcow2"));
            var list = new List<Base>();
            foreach (var (name, backing) in new[] { ("zlib", (string?)null), ("v2", null), ("ext", null), ("top", "v2") })
            {
                var bytes = File.ReadAllBytes(P(name + ".qcow2"));
                var h = Qcow2Header.Parse(bytes);
                long l1 = (long)h.L1TableOffset;
                long l2 = (long)(BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan((int)l1)) & 0x00ff_ffff_ffff_fe00);
                list.Add(new Base(name, bytes, backing is null ? null : File.ReadAllBytes(P(backing + ".qcow2")), l1, l2, h.ClusterSize));
            }
            return list;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void Run(string tool, params string[] args)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {tool}");
        var err = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{tool} exited {p.ExitCode}: {err.Result}");
    }

    public static Qcow2Mutant Mutate(Base b, Random rng)
    {
        var f = (byte[])b.File.Clone();
        var desc = new List<string>();
        int rounds = 1 + (rng.Next(4) == 0 ? rng.Next(3) : 0);
        for (int r = 0; r < rounds; r++)
        {
            switch (rng.Next(8))
            {
                case 0: case 1:
                {
                    var fd = Fields[rng.Next(Fields.Length)];
                    if (fd.Off + fd.Size > f.Length) break; // truncated by an earlier round
                    ulong v = rng.Next(5) == 0 ? (ulong)rng.NextInt64() : Values[rng.Next(Values.Length)];
                    if (rng.Next(4) == 0) v = (ulong)f.Length + (ulong)rng.Next(-2, 3) * (ulong)b.ClusterSize;
                    if (fd.Size == 8) BinaryPrimitives.WriteUInt64BigEndian(f.AsSpan(fd.Off), v);
                    else if (fd.Size == 4) BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(fd.Off), unchecked((uint)v));
                    else f[fd.Off] = unchecked((byte)v);
                    desc.Add($"{fd.Name}={v}");
                    break;
                }
                case 2:
                {
                    int n = 1 + rng.Next(8);
                    for (int i = 0; i < n; i++)
                    {
                        int at = rng.Next(rng.Next(2) == 0 ? 112 : 1024);
                        if (at >= f.Length) continue;
                        byte bit = (byte)(1 << rng.Next(8));
                        f[at] ^= bit;
                        desc.Add($"flip byte {at} ^0x{bit:x2}");
                    }
                    break;
                }
                case 3: case 4:
                {
                    // Replace a table entry: L1 (first 16 entries) or L2 (first 64), with a boundary or random value.
                    bool l1 = rng.Next(3) == 0;
                    long at = (l1 ? b.L1Offset + 8 * rng.Next(16) : b.L2Offset + 8 * rng.Next(64));
                    if (at == 0 || at + 8 > f.Length) break;
                    ulong old = BinaryPrimitives.ReadUInt64BigEndian(f.AsSpan((int)at));
                    ulong v = rng.Next(5) switch
                    {
                        0 => Values[rng.Next(Values.Length)],
                        1 => old ^ (1UL << rng.Next(64)),
                        2 => (1UL << 63) | ((ulong)f.Length + (ulong)rng.Next(-2, 3) * (ulong)b.ClusterSize),
                        3 => old + (ulong)(512 * rng.Next(1, 8)),
                        _ => (ulong)rng.NextInt64() | (rng.Next(2) == 0 ? 1UL << 62 : 0),
                    };
                    BinaryPrimitives.WriteUInt64BigEndian(f.AsSpan((int)at), v);
                    desc.Add($"{(l1 ? "L1" : "L2")} entry at {at} = 0x{v:x}");
                    break;
                }
                case 5:
                {
                    // Anywhere past the header cluster: data, compressed bytes, tables, bitmaps.
                    int n = 1 + rng.Next(16);
                    for (int i = 0; i < n && f.Length > b.ClusterSize; i++)
                    {
                        int at = b.ClusterSize + rng.Next(f.Length - b.ClusterSize);
                        f[at] = (byte)rng.Next(256);
                    }
                    desc.Add($"{n} random bytes past the header cluster");
                    break;
                }
                case 6:
                {
                    // A header extension with a hostile length right after the header.
                    if (f.Length < 104) break;
                    int hl = (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(100)), 1024);
                    if (BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(4)) == 2) hl = 72;
                    if (hl + 8 > f.Length) break;
                    uint type = rng.Next(2) == 0 ? 0xe2792aca : (uint)rng.Next();
                    uint len = (uint)Values[rng.Next(Values.Length)];
                    BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(hl), type);
                    BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(hl + 4), len);
                    desc.Add($"extension 0x{type:x8} length {len} at {hl}");
                    break;
                }
                default:
                {
                    int len = rng.Next(3) switch { 0 => rng.Next(200), 1 => rng.Next(f.Length + 1), _ => Math.Max(0, f.Length - 1 - rng.Next(b.ClusterSize)) };
                    Array.Resize(ref f, len);
                    desc.Add($"truncated to {len}");
                    break;
                }
            }
        }
        return new Qcow2Mutant(f, b.Backing, string.Join(", ", desc));
    }

    /// <summary>Opens a mutant over memory (its backing, if any, as an unmutated qcow2), reads it and walks its extents.</summary>
    public static void Exercise(Qcow2Mutant m)
    {
        IBlockDevice? backing = m.Backing is null ? null : Qcow2Device.Attach(new MemoryDevice(m.Backing, readOnly: true), null);
        Qcow2Device d;
        try
        {
            d = Qcow2Device.Attach(new MemoryDevice(m.File, readOnly: true), backing, cacheBytes: 1 << 20);
        }
        catch
        {
            backing?.Dispose();
            throw;
        }
        using (d)
        {
            var buf = new byte[64 << 10];
            if (d.Length <= 4 << 20)
                for (long off = 0; off < d.Length; off += buf.Length)
                    d.Read(off, buf.AsSpan(0, (int)Math.Min(buf.Length, d.Length - off)));
            else
            {
                var rng = new Random(7);
                foreach (long at in new[] { 0, d.Length - 1, d.Length / 2, rng.NextInt64(d.Length), rng.NextInt64(d.Length) })
                {
                    long off = Math.Max(0, Math.Min(at, d.Length - buf.Length));
                    d.Read(off, buf.AsSpan(0, (int)Math.Min(buf.Length, d.Length - off)));
                }
            }
            int entries = 0;
            for (long pos = 0; pos < d.Length && entries < 10_000; entries++)
            {
                var e = d.GetExtent(pos, d.Length - pos);
                if (e.Offset != pos || e.Length <= 0) throw new InvalidOperationException($"extent at {pos} is {e}");
                pos = e.End;
            }
        }
    }

    public HarnessResult Run(int seed, int count)
    {
        var result = new HarnessResult("fuzzed-qcow2");
        List<Base> bases;
        try
        {
            bases = MakeBases();
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            result.Fail($"fuzzed-qcow2: cannot make base images with qemu-img (apt-get install qemu-utils): {e.Message}");
            return result;
        }
        long opened = 0;
        MutantRunner.Run(result, seed, count, rng =>
        {
            var b = bases[rng.Next(bases.Count)];
            var m = Mutate(b, rng);
            return new FuzzCase($"base {b.Name}; {m.Description}", () =>
            {
                bool ok = false;
                string? fail = MutantRunner.Refusal(() => { Exerciser(m); ok = true; });
                if (ok) opened++;
                return fail;
            });
        });
        result.Notes.Add($"fuzzed-qcow2: {opened} of {count} mutants opened and read; the rest were refused with FvdException");
        return result;
    }
}
