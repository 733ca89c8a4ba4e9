namespace Fvd.Core.Image;

public enum PrefetchState { Disabled, Waiting, Running, Paused, Finished }

/// <summary>Live counters of an open image (status file, fvd-img info, tests).</summary>
public sealed record ImageStatus
{
    public required string Image { get; init; }
    public required long VirtualSize { get; init; }
    public required long BlocksTotal { get; init; }
    public required long BlocksLocal { get; init; }
    public required long BackingBytesRead { get; init; }
    public required long CopyOnReadBytesSaved { get; init; }
    public required long PrefetchBytesSaved { get; init; }
    public required PrefetchState Prefetch { get; init; }
    /// <summary>Prefetch read rate, moving average, bytes per second.</summary>
    public required double PrefetchRate { get; init; }
    public required bool CopyOnRead { get; init; }
    public required bool Finished { get; init; }
}
