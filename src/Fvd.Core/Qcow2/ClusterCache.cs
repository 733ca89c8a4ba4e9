// A bounded LRU cache of cluster-sized buffers keyed by their offset in the qcow2 file: L2 tables, and
// inflated compressed clusters (so 4 KiB reads of one 64 KiB compressed cluster inflate it once, not 16
// times). Thread-safe: lookups take one lock; a miss loads outside it (two threads missing the same entry
// both load it, harmless for a read-only file) so a slow store (HTTP) never blocks hits on other entries.
namespace Fvd.Core.Qcow2;

internal sealed class ClusterCache
{
    private readonly object _lock = new();
    private readonly Dictionary<long, LinkedListNode<(long Offset, byte[] Table)>> _map = new();
    private readonly LinkedList<(long Offset, byte[] Table)> _lru = new(); // most recent first
    private readonly int _capacity;

    /// <summary>At most maxBytes of buffers of entryBytes each, and at least one.</summary>
    public ClusterCache(long maxBytes, int entryBytes) => _capacity = (int)Math.Max(1, Math.Min(int.MaxValue, maxBytes / entryBytes));

    public int Capacity => _capacity;

    public byte[] Get(long offset, Func<long, byte[]> load)
    {
        lock (_lock)
        {
            if (_map.TryGetValue(offset, out var node))
            {
                _lru.Remove(node);
                _lru.AddFirst(node);
                return node.Value.Table;
            }
        }
        var table = load(offset);
        lock (_lock)
        {
            if (_map.TryGetValue(offset, out var node)) return node.Value.Table;
            _map[offset] = _lru.AddFirst((offset, table));
            if (_map.Count > _capacity)
            {
                var last = _lru.Last!;
                _lru.RemoveLast();
                _map.Remove(last.Value.Offset);
            }
        }
        return table;
    }
}
