// -o partitions: each partition of an image's MBR/GPT table is shown as NAME-pN.raw beside NAME.raw
// (man/fvdmount.1, "Partitions as files"). The table is read at mount and again, lazily at the next LOOKUP or READDIR of
// the root, after a write that touched it (first/last 64 KiB of the disk or an EBR sector). A partition that
// keeps its number, start and size keeps its node; any other is retired (its open files get EIO) and never
// reused, because node ids only grow. Partition nodes are shown with entry/attr timeout 0 so that names and
// sizes follow the table without kernel notifications.
using System.Collections.Concurrent;
using System.Text.Json;
using Fvd.Core.Partitions;

namespace Fvd.Fuse;

public sealed partial class FuseDispatcher
{
    /// <summary>Partition node ids start here, far above the fixed nodes, and are never reused.</summary>
    private const ulong PartitionIdBase = 1UL << 40;

    private sealed class PartitionSet(ImageNode disk)
    {
        public ImageNode Disk { get; } = disk;
        public string BaseName { get; } = disk.Name.EndsWith(".raw", StringComparison.Ordinal) ? disk.Name[..^4] : disk.Name;
        public object Lock { get; } = new();
        public volatile bool Dirty = true;
        public volatile ImageNode[] Nodes = [];
        public volatile long[] Ebrs = [];
        public string? Warning;
        public string Kind = "none";
    }

    private PartitionSet[] _partitionSets = [];
    private readonly ConcurrentDictionary<ulong, (ImageNode Node, PartitionSet Set)> _partitionNodes = new();
    private volatile ImageNode[] _partitionList = [];
    private long _lastPartitionId = (long)PartitionIdBase - 1;
    private uint _fileMode;

    private void InitPartitions(uint fileMode)
    {
        _fileMode = fileMode;
        if (!_options.Partitions) return;
        _partitionSets = _nodes.Select(n => new PartitionSet(n)).ToArray();
        RefreshPartitions();
    }

    private bool FindPartition(ulong nodeId, out ImageNode node)
    {
        if (nodeId >= PartitionIdBase && _partitionNodes.TryGetValue(nodeId, out var p)) { node = p.Node; return true; }
        node = null!;
        return false;
    }

    private static bool IsPartitionId(ulong nodeId) => nodeId >= PartitionIdBase;

    /// <summary>After a successful write/discard/zero: does it change a partition table? Then re-read it lazily.</summary>
    private void NoteWrite(ImageNode node, long offset, long length)
    {
        if (_partitionSets.Length == 0 || length <= 0) return;
        PartitionSet set;
        if (IsPartitionId(node.NodeId))
        {
            if (!_partitionNodes.TryGetValue(node.NodeId, out var p)) return;
            set = p.Set;
            offset += ((PartitionDevice)node.Device).Start;
        }
        else set = _partitionSets[node.NodeId - 2];
        if (PartitionTable.TouchesTableArea(set.Disk.Device.Length, offset, length)) { set.Dirty = true; return; }
        foreach (long ebr in set.Ebrs)
            if (ebr < offset + length && offset < ebr + PartitionTable.SectorSize) { set.Dirty = true; return; }
    }

    /// <summary>Re-reads the tables that writes may have changed.</summary>
    private void RefreshPartitions()
    {
        bool changed = false;
        foreach (var set in _partitionSets)
        {
            if (!set.Dirty) continue;
            lock (set.Lock)
            {
                if (!set.Dirty) continue;
                set.Dirty = false;
                Rescan(set);
                changed = true;
            }
        }
        if (changed) _partitionList = _partitionSets.SelectMany(s => s.Nodes).ToArray();
    }

    private void Rescan(PartitionSet set)
    {
        PartitionTable table;
        try { table = PartitionTable.Read(set.Disk.Device); }
        catch (Exception e)
        {
            // The disk could not be read (a failing backing): keep what is shown and try again later.
            Console.Error.WriteLine($"fvdmount: {set.Disk.Name}: cannot read the partition table: {e.Message}");
            set.Dirty = true;
            return;
        }
        var old = set.Nodes;
        var nodes = new List<ImageNode>();
        foreach (var p in table.Partitions)
        {
            var keep = Array.Find(old, n => n.Device is PartitionDevice d && d.Start == p.Start && d.Length == p.Length
                                            && n.Name == PartitionName(set, p.Number));
            if (keep is null)
            {
                ulong id = (ulong)Interlocked.Increment(ref _lastPartitionId);
                string name = PartitionName(set, p.Number);
                keep = new ImageNode(id, new FuseImage(name, new PartitionDevice(set.Disk.Device, p.Start, p.Length, name)),
                    _fileMode, _dirUid, _dirGid, NowNs());
                _partitionNodes[id] = (keep, set);
            }
            nodes.Add(keep);
        }
        foreach (var n in old)
            if (!nodes.Contains(n)) ((PartitionDevice)n.Device).Retire(); // stays findable: its open files get EIO
        set.Nodes = nodes.ToArray();
        set.Ebrs = table.EbrOffsets.ToArray();
        set.Kind = table.Kind;
        string? warning = table.Warnings.Count == 0 ? null : string.Join("; ", table.Warnings);
        if (warning is not null && warning != set.Warning)
            Console.Error.WriteLine($"fvdmount: {set.Disk.Name}: partition table: {warning}");
        set.Warning = warning;
    }

    private static string PartitionName(PartitionSet set, int number) => $"{set.BaseName}-p{number}.raw";

    /// <summary>The status file's view of a disk's partitions (only with -o partitions).</summary>
    private void WritePartitionStatus(Utf8JsonWriter w, ImageNode disk)
    {
        if (_partitionSets.Length == 0 || IsPartitionId(disk.NodeId)) return;
        var set = _partitionSets[disk.NodeId - 2];
        w.WriteString("partition_table", set.Kind);
        w.WriteStartArray("partitions");
        foreach (var n in set.Nodes)
        {
            w.WriteStartObject();
            w.WriteString("name", n.Name);
            w.WriteNumber("start", ((PartitionDevice)n.Device).Start);
            w.WriteNumber("size", n.Device.Length);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        if (set.Warning is { } warning) w.WriteString("partition_warning", warning);
    }
}
