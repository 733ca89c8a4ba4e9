// A per-thread cancellation token for device reads that may wait a long time (a remote backing). The FUSE
// server sets it around a request it may have to interrupt; IBlockDevice stays token-free, and the devices
// that can block for long (HttpRangeDevice) honour it. Everything else ignores it.
namespace Fvd.Core.Io;

public static class IoCancellation
{
    [ThreadStatic] private static CancellationToken t_current;

    /// <summary>The token of the request this thread is serving; None when nobody can cancel it.</summary>
    public static CancellationToken Current => t_current;

    /// <summary>Makes <paramref name="token"/> current on this thread until the returned scope is disposed.</summary>
    public static Scope Use(CancellationToken token)
    {
        var previous = t_current;
        t_current = token;
        return new Scope(previous);
    }

    /// <summary>Throws FvdException(Interrupted) if the current request was cancelled.</summary>
    public static void ThrowIfCancelled(string? path = null)
    {
        if (t_current.IsCancellationRequested) throw Interrupted(path);
    }

    public static FvdException Interrupted(string? path, Exception? inner = null) =>
        new(FvdErrorKind.Interrupted, "request interrupted", path, inner);

    public readonly struct Scope : IDisposable
    {
        private readonly CancellationToken _previous;
        internal Scope(CancellationToken previous) => _previous = previous;
        public void Dispose() => t_current = _previous;
    }
}
