using Mono.Unix;

namespace Fvd.Core.Io;

public enum FileKind { Missing, Regular, Directory, BlockDevice, CharacterDevice, Fifo, Socket, SymbolicLink, Other }

/// <summary>What a path is (after following links); the backing-path policy needs FIFOs and devices told apart.</summary>
public static class FileKinds
{
    public static FileKind Of(string path)
    {
        try
        {
            var info = new UnixFileInfo(path);
            if (!info.Exists) return FileKind.Missing;
            var t = info.IsSymbolicLink ? new UnixSymbolicLinkInfo(path).GetContents().FileType : info.FileType;
            return t switch
            {
                FileTypes.RegularFile => FileKind.Regular,
                FileTypes.Directory => FileKind.Directory,
                FileTypes.BlockDevice => FileKind.BlockDevice,
                FileTypes.CharacterDevice => FileKind.CharacterDevice,
                FileTypes.Fifo => FileKind.Fifo,
                FileTypes.Socket => FileKind.Socket,
                _ => FileKind.Other,
            };
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            return FileKind.Missing;
        }
    }
}
