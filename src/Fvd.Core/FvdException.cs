// The one exception type of the library. Callers decide by Kind: the FUSE boundary maps it to an errno,
// fvd-img to an exit code and a one-line message. Anything else escaping the library is a bug.
namespace Fvd.Core;

public enum FvdErrorKind
{
    /// <summary>The host I/O failed (EIO).</summary>
    Io,
    /// <summary>An image file is not an FVD image or a field fails validation.</summary>
    InvalidFormat,
    /// <summary>The image uses a feature this build does not implement.</summary>
    UnsupportedFeature,
    /// <summary>The image's metadata contradicts itself.</summary>
    CorruptImage,
    /// <summary>A request lies (partly) outside the device.</summary>
    OutOfBounds,
    /// <summary>A file named by the user or by the image does not exist.</summary>
    NotFound,
    /// <summary>A write to something opened read-only.</summary>
    ReadOnly,
    /// <summary>The host file system is full.</summary>
    NoSpace,
    /// <summary>A bad option or argument from the caller.</summary>
    InvalidArgument,
    /// <summary>The operation is not supported by this device.</summary>
    NotSupported,
    /// <summary>Permission denied by the host or by policy.</summary>
    PermissionDenied,
    /// <summary>The image is in use (locked by another process).</summary>
    Busy,
    /// <summary>The caller cancelled the request (IoCancellation) before it changed anything.</summary>
    Interrupted,
}

public sealed class FvdException : Exception
{
    public FvdErrorKind Kind { get; }

    /// <summary>The file the error concerns, when known; printed first by the tools.</summary>
    public string? FilePath { get; }

    public FvdException(FvdErrorKind kind, string message, string? filePath = null, Exception? inner = null)
        : base(message, inner)
    {
        Kind = kind;
        FilePath = filePath;
    }

    /// <summary>One line for a user: "PATH: message".</summary>
    public string OneLine => FilePath is null ? Message : $"{FilePath}: {Message}";

    /// <summary>Wraps a host I/O exception, keeping ENOSPC and permission errors distinguishable.</summary>
    public static FvdException FromIo(Exception e, string? path, string what)
    {
        if (e is FvdException f) return f;
        var kind = e switch
        {
            FileNotFoundException or DirectoryNotFoundException => FvdErrorKind.NotFound,
            UnauthorizedAccessException => FvdErrorKind.PermissionDenied,
            IOException io when (io.HResult & 0xFFFF) == 28 || io.Message.Contains("No space left", StringComparison.Ordinal) => FvdErrorKind.NoSpace,
            _ => FvdErrorKind.Io,
        };
        return new FvdException(kind, $"{what}: {e.Message}", path, e);
    }
}
