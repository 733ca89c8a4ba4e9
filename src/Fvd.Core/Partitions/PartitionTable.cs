// Reads the partition table of a disk (MBR with an EBR chain, or GPT behind a protective MBR) into a list of
// byte ranges. The table is hostile input: an entry that overlaps an earlier one, lies outside the disk or
// its container, or belongs to an EBR loop is left out with a warning; nothing here throws on bad content.
using Fvd.Core.Io;

namespace Fvd.Core.Partitions;

/// <summary>A partition as Linux numbers it: GPT entry index + 1; MBR slots 1-4, logical partitions from 5.</summary>
public readonly record struct Partition(int Number, long Start, long Length)
{
    public long End => Start + Length;
}

public sealed class PartitionTable
{
    public const int SectorSize = MasterBootRecord.SectorSize;
    /// <summary>Bound on a GPT entry array we read (the usual one is 16 KiB).</summary>
    public const int MaxGptEntryBytes = 1 << 20;
    /// <summary>Bound on the logical partitions of an EBR chain.</summary>
    public const int MaxLogical = 256;

    private PartitionTable(string kind, List<Partition> partitions, List<string> warnings, List<long> ebrs)
    {
        Kind = kind;
        Partitions = partitions;
        Warnings = warnings;
        EbrOffsets = ebrs;
    }

    /// <summary>"gpt", "mbr" or "none".</summary>
    public string Kind { get; }
    public IReadOnlyList<Partition> Partitions { get; }
    /// <summary>Why entries were left out (empty for a sound table).</summary>
    public IReadOnlyList<string> Warnings { get; }
    /// <summary>Byte offsets of the EBR sectors read: writes there change the table too.</summary>
    public IReadOnlyList<long> EbrOffsets { get; }

    /// <summary>
    /// The bytes that hold a table apart from EBRs: the first and last 64 KiB cover the MBR, both GPT headers and
    /// the usual entry arrays (also with 4 KiB sectors).
    /// </summary>
    public static bool TouchesTableArea(long diskLength, long offset, long length)
    {
        const long area = 64 * 1024;
        return offset < area || offset + length > diskLength - area;
    }

    public static PartitionTable Read(IBlockDevice dev)
    {
        var warnings = new List<string>();
        var parts = new List<Partition>();
        var ebrs = new List<long>();
        long sectors = dev.Length / SectorSize;
        if (sectors < 2) return new PartitionTable("none", parts, warnings, ebrs);
        var sector = new byte[SectorSize];
        dev.Read(0, sector);
        var mbr = MasterBootRecord.Parse(sector);
        if (mbr is null) return new PartitionTable("none", parts, warnings, ebrs);
        if (mbr.IsProtectiveGpt)
        {
            ReadGpt(dev, (ulong)sectors, parts, warnings);
            return new PartitionTable("gpt", Accept(parts, dev.Length, warnings), warnings, ebrs);
        }
        Partition? extended = null;
        for (int i = 0; i < MasterBootRecord.EntryCount; i++)
        {
            var e = mbr.Entries[i];
            if (e.IsEmpty) continue;
            var p = new Partition(i + 1, (long)e.FirstLba * SectorSize, (long)e.SectorCount * SectorSize);
            if (e.IsExtended)
            {
                if (extended is not null) { warnings.Add($"partition {i + 1}: a second extended partition, left out"); continue; }
                if (p.Length <= 0 || p.Start <= 0 || p.End > dev.Length) { warnings.Add($"partition {i + 1}: extended partition outside the disk, left out"); continue; }
                extended = p;
                continue;
            }
            parts.Add(p);
        }
        if (extended is { } ext) ReadEbrChain(dev, ext, parts, warnings, ebrs);
        return new PartitionTable("mbr", Accept(parts, dev.Length, warnings), warnings, ebrs);
    }

    private static void ReadEbrChain(IBlockDevice dev, Partition ext, List<Partition> parts, List<string> warnings, List<long> ebrs)
    {
        var seen = new HashSet<long>();
        var sector = new byte[SectorSize];
        long ebr = ext.Start;
        int number = 5;
        while (true)
        {
            if (!seen.Add(ebr)) { warnings.Add($"EBR chain loops back to byte {ebr}, stopped"); return; }
            if (seen.Count > MaxLogical) { warnings.Add($"more than {MaxLogical} logical partitions, stopped"); return; }
            if (ebr < ext.Start || ebr + SectorSize > ext.End) { warnings.Add($"EBR at byte {ebr} lies outside the extended partition, stopped"); return; }
            ebrs.Add(ebr);
            dev.Read(ebr, sector);
            var rec = MasterBootRecord.Parse(sector);
            if (rec is null) { if (ebr != ext.Start) warnings.Add($"EBR at byte {ebr} has no signature, stopped"); return; }
            var data = rec.Entries[0];
            if (!data.IsEmpty)
            {
                var p = new Partition(number, ebr + (long)data.FirstLba * SectorSize, (long)data.SectorCount * SectorSize);
                if (p.Start < ext.Start || p.End > ext.End) warnings.Add($"partition {number}: outside the extended partition, left out");
                else parts.Add(p);
                number++;
            }
            var next = rec.Entries[1];
            if (next.IsEmpty || next.SectorCount == 0) return;
            ebr = ext.Start + (long)next.FirstLba * SectorSize;
        }
    }

    private static void ReadGpt(IBlockDevice dev, ulong sectors, List<Partition> parts, List<string> warnings)
    {
        var sector = new byte[SectorSize];
        dev.Read(SectorSize, sector);
        var header = GptHeader.Parse(sector);
        string? why = header.Check(sector, 1, sectors, MaxGptEntryBytes);
        byte[]? entries = why is null ? ReadEntries(dev, header, out why) : null;
        if (entries is null)
        {
            // The primary is unusable: the backup header at the last sector, as the kernel and gdisk do.
            dev.Read((long)(sectors - 1) * SectorSize, sector);
            var backup = GptHeader.Parse(sector);
            string? whyBackup = backup.Check(sector, sectors - 1, sectors, MaxGptEntryBytes);
            entries = whyBackup is null ? ReadEntries(dev, backup, out whyBackup) : null;
            if (entries is null) { warnings.Add($"GPT: primary ({why}) and backup ({whyBackup}) unusable, no partitions"); return; }
            warnings.Add($"GPT: primary unusable ({why}), using the backup");
            header = backup;
        }
        for (int i = 0; i < header.EntryCount; i++)
        {
            var e = GptEntry.Parse(entries.AsSpan(i * (int)header.EntrySize, GptEntry.Size));
            if (e.IsUnused) continue;
            if (e.FirstLba > e.LastLba || e.FirstLba < header.FirstUsableLba || e.LastLba > header.LastUsableLba)
            {
                warnings.Add($"partition {i + 1}: LBA {e.FirstLba}-{e.LastLba} outside the usable range, left out");
                continue;
            }
            parts.Add(new Partition(i + 1, (long)e.FirstLba * SectorSize, (long)(e.LastLba - e.FirstLba + 1) * SectorSize));
        }
    }

    private static byte[]? ReadEntries(IBlockDevice dev, GptHeader h, out string? why)
    {
        var entries = new byte[checked((int)(h.EntryCount * h.EntrySize))]; // bounded by Check
        dev.Read((long)h.EntriesLba * SectorSize, entries);
        why = Crc32.Compute(entries) == h.EntriesCrc ? null : "entry array CRC mismatch";
        return why is null ? entries : null;
    }

    /// <summary>Drops entries outside the disk or overlapping one with a lower number; sorted by number.</summary>
    private static List<Partition> Accept(List<Partition> parts, long diskLength, List<string> warnings)
    {
        var ok = new List<Partition>();
        foreach (var p in parts.OrderBy(p => p.Number))
        {
            if (p.Length <= 0 || p.Start <= 0 || p.Start >= diskLength || p.Length > diskLength - p.Start)
            {
                warnings.Add($"partition {p.Number}: bytes {p.Start}+{p.Length} outside the disk, left out");
                continue;
            }
            if (ok.FirstOrDefault(q => p.Start < q.End && q.Start < p.End) is { Length: > 0 } other)
            {
                warnings.Add($"partition {p.Number}: overlaps partition {other.Number}, left out");
                continue;
            }
            ok.Add(p);
        }
        return ok;
    }
}
