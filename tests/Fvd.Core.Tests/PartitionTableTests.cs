// The partition table reader over hand-built MBR/EBR/GPT sectors, sound and hostile: bad entries are left out
// with a warning, never a crash or an allocation sized by a field.
using System.Buffers.Binary;
using Fvd.Core.Io;
using Fvd.Core.Partitions;

namespace Fvd.Core.Tests;

public sealed class PartitionTableTests
{
    private const int S = PartitionTable.SectorSize;
    private const long DiskSectors = 8192; // 4 MiB
    private static readonly Guid Linux = new("0fc63daf-8483-4772-8e79-3d69d8477de4");

    private static MemoryDevice Disk() => new(DiskSectors * S);

    private static void WriteMbr(IBlockDevice dev, long at, params MbrEntry[] entries)
    {
        var sector = new byte[S];
        var all = new MbrEntry[4];
        entries.CopyTo(all, 0);
        new MasterBootRecord(all).WriteTo(sector);
        dev.Write(at, sector);
    }

    /// <summary>A protective MBR, the primary header at LBA 1 with entries at LBA 2, the backup at the end.</summary>
    private static void WriteGpt(IBlockDevice dev, GptEntry[] entries, uint count = 128, bool breakPrimary = false, bool breakBackup = false)
    {
        WriteMbr(dev, 0, new MbrEntry(0, MbrEntry.TypeGptProtective, 1, (uint)(DiskSectors - 1)));
        var array = new byte[count * GptEntry.Size];
        for (int i = 0; i < entries.Length; i++) entries[i].WriteTo(array.AsSpan(i * GptEntry.Size));
        uint arrayCrc = Crc32.Compute(array);
        ulong arraySectors = (ulong)array.Length / S;
        var header = new GptHeader
        {
            Signature = GptHeader.SignatureValue, Revision = 0x10000, HeaderSize = GptHeader.MinSize, MyLba = 1,
            AlternateLba = DiskSectors - 1, FirstUsableLba = 34, LastUsableLba = DiskSectors - 34, DiskGuid = Guid.NewGuid(),
            EntriesLba = 2, EntryCount = count, EntrySize = GptEntry.Size, EntriesCrc = arrayCrc,
        };
        var sector = new byte[S];
        header.WriteTo(sector);
        if (breakPrimary) sector[GptHeader.FirstUsableOffset] ^= 1; // the CRC no longer matches
        dev.Write(S, sector);
        dev.Write(2 * S, array);
        var backup = header with { MyLba = DiskSectors - 1, AlternateLba = 1, EntriesLba = DiskSectors - 1 - arraySectors };
        sector.AsSpan().Clear();
        backup.WriteTo(sector);
        if (breakBackup) sector[GptHeader.FirstUsableOffset] ^= 1;
        dev.Write((DiskSectors - 1) * S, sector);
        dev.Write((long)backup.EntriesLba * S, array);
    }

    private static GptEntry Entry(ulong first, ulong last) => new(Linux, Guid.NewGuid(), first, last, 0, "p");

    [Fact]
    public void Crc32_is_the_iso_hdlc_checksum() =>
        Assert.Equal(0xCBF43926u, Crc32.Compute("123456789"u8)); // the standard check value, not CRC-32C's 0xE3069283

    [Fact]
    public void Gpt_entries_become_partitions_numbered_by_slot()
    {
        var dev = Disk();
        WriteGpt(dev, [Entry(2048, 4095), default, Entry(4096, 6143)]);
        var t = PartitionTable.Read(dev);
        Assert.Equal("gpt", t.Kind);
        Assert.Empty(t.Warnings);
        Assert.Equal([new Partition(1, 2048 * S, 2048 * S), new Partition(3, 4096 * S, 2048 * S)], t.Partitions);
    }

    [Fact]
    public void Gpt_golden_bytes_of_a_header_and_an_entry()
    {
        var e = new GptEntry(Linux, Guid.Empty, 0x0102, 0x0304, 0, "A");
        var b = new byte[GptEntry.Size];
        e.WriteTo(b);
        Assert.Equal(0xAF, b[0]); // GUIDs are stored mixed-endian: 0fc63daf → af 3d c6 0f
        Assert.Equal(0x0102ul, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(32)));
        Assert.Equal((byte)'A', b[56]);
        Assert.Equal(e, GptEntry.Parse(b));
    }

    [Fact]
    public void A_corrupt_primary_gpt_falls_back_to_the_backup_with_a_warning()
    {
        var dev = Disk();
        WriteGpt(dev, [Entry(2048, 4095)], breakPrimary: true);
        var t = PartitionTable.Read(dev);
        Assert.Single(t.Partitions);
        Assert.Contains(t.Warnings, w => w.Contains("backup", StringComparison.Ordinal));

        WriteGpt(dev, [Entry(2048, 4095)], breakPrimary: true, breakBackup: true);
        t = PartitionTable.Read(dev);
        Assert.Empty(t.Partitions);
        Assert.Contains(t.Warnings, w => w.Contains("CRC", StringComparison.Ordinal));
    }

    [Fact]
    public void Hostile_gpt_entries_overlapping_or_past_the_end_are_left_out()
    {
        var dev = Disk();
        WriteGpt(dev,
        [
            Entry(2048, 4095),
            Entry(3000, 5000),                  // overlaps 1
            Entry(6000, DiskSectors + 100),     // past the end of the disk
            Entry(5000, 4000),                  // ends before it starts
            Entry(0, 10),                       // over the table itself
            Entry(ulong.MaxValue - 1, ulong.MaxValue), // would overflow a byte offset
            Entry(4096, 6143),
        ]);
        var t = PartitionTable.Read(dev);
        Assert.Equal([1, 7], t.Partitions.Select(p => p.Number));
        Assert.Equal(5, t.Warnings.Count);
        Assert.Contains(t.Warnings, w => w.StartsWith("partition 2: overlaps partition 1", StringComparison.Ordinal));
    }

    [Fact]
    public void A_huge_gpt_entry_count_is_refused_without_allocating_it()
    {
        var dev = Disk();
        WriteGpt(dev, [Entry(2048, 4095)]);
        var sector = new byte[S];
        dev.Read(S, sector);
        var h = GptHeader.Parse(sector) with { EntryCount = uint.MaxValue, HeaderSize = GptHeader.MinSize };
        h.WriteTo(sector);
        dev.Write(S, sector);
        var t = PartitionTable.Read(dev); // the backup is still sound
        Assert.Single(t.Partitions);
        Assert.Contains(t.Warnings, w => w.Contains("too many", StringComparison.Ordinal));
    }

    [Fact]
    public void Mbr_primaries_and_logicals_in_an_ebr_chain_numbered_like_linux()
    {
        var dev = Disk();
        WriteMbr(dev, 0,
            new MbrEntry(0, 0x83, 2048, 1024),
            new MbrEntry(0, 0x05, 4096, 4000),   // extended: sectors 4096..8095
            new MbrEntry(0, 0x83, 3072, 1024));
        WriteMbr(dev, 4096L * S, new MbrEntry(0, 0x83, 1, 511), new MbrEntry(0, 0x05, 1024, 1024));    // logical 5
        WriteMbr(dev, 5120L * S, new MbrEntry(0, 0x83, 64, 256));                                       // logical 6
        var t = PartitionTable.Read(dev);
        Assert.Equal("mbr", t.Kind);
        Assert.Empty(t.Warnings);
        Assert.Equal(
            [new Partition(1, 2048 * S, 1024 * S), new Partition(3, 3072 * S, 1024 * S),
             new Partition(5, 4097 * S, 511 * S), new Partition(6, (5120 + 64) * S, 256 * S)],
            t.Partitions);
        Assert.Equal([4096L * S, 5120L * S], t.EbrOffsets);
    }

    [Fact]
    public void An_ebr_loop_stops_with_a_warning_and_keeps_what_it_found()
    {
        var dev = Disk();
        WriteMbr(dev, 0, new MbrEntry(0, 0x0F, 4096, 4000));
        WriteMbr(dev, 4096L * S, new MbrEntry(0, 0x83, 1, 511), new MbrEntry(0, 0x05, 1024, 1024));
        WriteMbr(dev, 5120L * S, new MbrEntry(0, 0x83, 1, 100), new MbrEntry(0, 0x05, 0, 1024)); // back to the first
        var t = PartitionTable.Read(dev);
        Assert.Equal([5, 6], t.Partitions.Select(p => p.Number));
        Assert.Contains(t.Warnings, w => w.Contains("loops", StringComparison.Ordinal));
    }

    [Fact]
    public void Hostile_mbr_entries_are_left_out()
    {
        var dev = Disk();
        WriteMbr(dev, 0,
            new MbrEntry(0, 0x83, 2048, uint.MaxValue),  // past the end
            new MbrEntry(0, 0x83, 0, 100),               // over the MBR itself
            new MbrEntry(0, 0x05, 4096, 100),            // extended whose EBR points outside it
            new MbrEntry(0, 0x83, 3000, 2000));           // overlaps the extended partition: allowed, it is no file
        WriteMbr(dev, 4096L * S, new MbrEntry(0, 0x83, 50, 1000)); // logical larger than the extended partition
        var t = PartitionTable.Read(dev);
        Assert.Equal([4], t.Partitions.Select(p => p.Number));
        Assert.Equal(3, t.Warnings.Count);
    }

    [Fact]
    public void No_signature_or_a_tiny_disk_means_no_table()
    {
        Assert.Equal("none", PartitionTable.Read(Disk()).Kind);
        Assert.Empty(PartitionTable.Read(new MemoryDevice(600)).Partitions);
    }

    [Fact]
    public void Random_sectors_never_throw()
    {
        var rng = new Random(7);
        for (int round = 0; round < 300; round++)
        {
            var dev = Disk();
            var junk = new byte[64 * 1024];
            rng.NextBytes(junk);
            dev.Write(0, junk);
            if (round % 2 == 0) WriteMbr(dev, 0, new MbrEntry(0, (byte)(round % 3 == 0 ? 0xEE : 0x05), (uint)rng.Next(0, 9000), (uint)rng.Next()));
            var t = PartitionTable.Read(dev);
            foreach (var p in t.Partitions) Assert.True(p.Start > 0 && p.End <= dev.Length);
        }
    }
}
