// Which file a name means, as the kernel sees it: device + inode. Names lie (hard links, symlinks, "./x" and
// "x", a symlinked directory), so every "is this the same file?" question in the library is asked here.
using Mono.Unix.Native;

namespace Fvd.Core.Io;

public readonly record struct FileIdentity(ulong Device, ulong Inode)
{
    /// <summary>The file a path names (symlinks followed), or null when it does not exist.</summary>
    public static FileIdentity? Of(string path)
    {
        if (HttpRangeDevice.IsUrl(path)) return null;
        return Syscall.stat(path, out var st) == 0 ? new FileIdentity(st.st_dev, st.st_ino) : null;
    }

    /// <summary>
    /// A key that is equal for two names of one file (device and inode when it exists), the URL itself for a
    /// URL, else the full path: what chain walkers keep to notice a loop.
    /// </summary>
    public static string Key(string location) =>
        HttpRangeDevice.IsUrl(location) ? location : Of(location)?.ToString() ?? Path.GetFullPath(location);

    /// <summary>The file an open descriptor refers to.</summary>
    public static FileIdentity OfFd(int fd, string path) =>
        Syscall.fstat(fd, out var st) == 0 ? new FileIdentity(st.st_dev, st.st_ino)
            : throw new FvdException(FvdErrorKind.Io, $"fstat failed: {Libc.StrError((int)Stdlib.GetLastError())}", path);

    /// <summary>
    /// True when both paths name one file: the same inode when both exist; when neither exists yet, the same
    /// name in the same directory (so "-o data_file=vm.fvd" for vm.fvd is caught before either is created).
    /// </summary>
    public static bool Same(string a, string b)
    {
        if (HttpRangeDevice.IsUrl(a) || HttpRangeDevice.IsUrl(b)) return false;
        var ia = Of(a);
        var ib = Of(b);
        if (ia is not null || ib is not null) return ia == ib;
        string fa = Path.GetFullPath(a), fb = Path.GetFullPath(b);
        if (Path.GetFileName(fa) != Path.GetFileName(fb)) return false;
        var da = Of(Path.GetDirectoryName(fa) ?? "/");
        return da is not null && da == Of(Path.GetDirectoryName(fb) ?? "/");
    }

    /// <summary>
    /// Refuses to create or write target when it is one of the files to keep (a backing, a source, the
    /// image's own metadata file): nothing that is not the new image's own is ever written.
    /// </summary>
    /// <param name="target">The file about to be created, truncated or written.</param>
    /// <param name="role">What target is, for the message ("output image", "data file").</param>
    /// <param name="keep">The files that must stay untouched, each with what it is ("backing file").</param>
    public static void RefuseAlias(string target, string role, IEnumerable<(string Path, string Role)> keep)
    {
        foreach (var (path, what) in keep)
        {
            if (!Same(target, path)) continue;
            string which = Path.GetFullPath(target) == Path.GetFullPath(path) ? what : $"{what} {path}";
            throw new FvdException(FvdErrorKind.InvalidArgument, $"refusing to write the {role}: it is the {which}; choose another name", target);
        }
    }
}
