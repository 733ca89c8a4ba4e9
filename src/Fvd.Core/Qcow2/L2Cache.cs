// A bounded LRU cache of L2 tables keyed by their offset in the qcow2 file. Thread-safe: lookups take one
// lock; a miss reads the table outside it (two threads missing the same table both read it, which is
// harmless for a read-only file) so a slow backing store (HTTP) never blocks hits on other tables.
namespace Fvd.Core.Qcow2;

internal sealed class L2Cache
{
    private readonly object _lock = new();
    private readonly Dictionary<long, LinkedListNode<(long Offset, byte[] Table)>> _map = new();
    private readonly LinkedList<(long Offset, byte[] Table)> _lru = new(); // most recent first
    private readonly int _capacity;

    /// <summary>At most maxBytes of tables of tableBytes each, and at least one.</summary>
    public L2Cache(long maxBytes, int tableBytes) => _capacity = (int)Math.Max(1, Math.Min(int.MaxValue, maxBytes / tableBytes));

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
