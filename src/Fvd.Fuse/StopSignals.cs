// SIGTERM, SIGINT and SIGHUP mean "unmount and exit" (man/fvdmount.1, SIGNALS). Caught with Mono.Unix's
// UnixSignal, which counts deliveries in its own handler and wakes a waiting thread: the handler runs no
// managed code, so it is safe whatever the thread was doing, also in the NativeAOT build.
using Mono.Unix;
using Mono.Unix.Native;

namespace Fvd.Fuse;

/// <summary>Calls an action on a thread of its own when a stop signal arrives, until disposed.</summary>
public sealed class StopSignals : IDisposable
{
    /// <summary>How long the watcher waits before looking whether it was disposed.</summary>
    private const int PollMs = 200;

    private readonly UnixSignal[] _signals;
    private readonly Thread _thread;
    private readonly Action _onSignal;
    private volatile bool _disposed;

    private StopSignals(Action onSignal)
    {
        _onSignal = onSignal;
        _signals = [new UnixSignal(Signum.SIGTERM), new UnixSignal(Signum.SIGINT), new UnixSignal(Signum.SIGHUP)];
        _thread = new Thread(Watch) { IsBackground = true, Name = "stop-signals" };
        _thread.Start();
    }

    /// <summary>Starts catching the stop signals; <paramref name="onSignal"/> runs after each wake-up (deliveries close together count once).</summary>
    public static StopSignals Watch(Action onSignal) => new(onSignal ?? throw new ArgumentNullException(nameof(onSignal)));

    private void Watch()
    {
        while (!_disposed)
        {
            int i = UnixSignal.WaitAny(_signals, PollMs);
            if (i < 0 || i >= _signals.Length || _disposed) continue;
            _signals[i].Reset();
            _onSignal();
        }
    }

    /// <summary>Stops watching and restores the signals' previous handlers.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (Thread.CurrentThread != _thread) _thread.Join();
        foreach (var s in _signals) s.Dispose();
    }
}
