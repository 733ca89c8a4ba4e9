// Constants and byte offsets of the Linux FUSE kernel protocol (include/uapi/linux/fuse.h, 7.38 layout;
// everything is little-endian with no implicit padding). Offsets are relative to each struct's start.
namespace Fvd.Fuse;

internal static class FuseProtocol
{
    public const uint KernelMajor = 7;
    /// <summary>The minor version we speak; the reply carries min(kernel's, ours).</summary>
    public const uint OurMinor = 38;
    /// <summary>Older kernels lack parallel direct writes and the structs we rely on.</summary>
    public const uint MinKernelMinor = 31;

    public const ulong RootId = 1;

    public const int InHeaderSize = 40;  // len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
    public const int OutHeaderSize = 16; // len, error, unique

    public const int InitOutSize = 64;
    public const int AttrSize = 88;
    public const int AttrOutSize = 104;
    public const int EntryOutSize = 128;
    public const int OpenOutSize = 16;
    public const int ReadInSize = 40;
    public const int WriteInSize = 40;
    public const int WriteOutSize = 8;
    public const int SetattrInSize = 88;
    public const int OpenInSize = 8;
    public const int FallocateInSize = 32;
    public const int LseekInSize = 24;
    public const int LseekOutSize = 8;
    public const int StatfsOutSize = 80;
    public const int GetxattrInSize = 8;
    public const int GetxattrOutSize = 8;
    /// <summary>fuse_setxattr_in without setxattr_flags: what the kernel sends unless FUSE_SETXATTR_EXT was agreed (we do not ask for it).</summary>
    public const int SetxattrInCompatSize = 8;
    public const int AccessInSize = 8;
    public const int FsyncInSize = 16;
    public const int InterruptInSize = 8;
    public const int InitInMinSize = 16; // major, minor, max_readahead, flags (the 64-byte form adds flags2)
    public const int DirentHeaderSize = 24; // ino, off, namelen, type

    // Field offsets of each struct, named as in fuse.h (an offset past the struct's size is never read).
    public static class InHeader { public const int Len = 0, Opcode = 4, Unique = 8, NodeId = 16, Uid = 24, Gid = 28, Pid = 32, TotalExtLen = 36; }
    public static class OutHeader { public const int Len = 0, Error = 4, Unique = 8; }
    public static class InitIn { public const int Major = 0, Minor = 4, MaxReadahead = 8, Flags = 12, Flags2 = 16; }
    public static class InitOut
    {
        public const int Major = 0, Minor = 4, MaxReadahead = 8, Flags = 12, MaxBackground = 16, CongestionThreshold = 18,
            MaxWrite = 20, TimeGran = 24, MaxPages = 28, Flags2 = 32, MaxStackDepth = 36;
    }
    public static class Attr
    {
        public const int Ino = 0, Size = 8, Blocks = 16, Atime = 24, Mtime = 32, Ctime = 40, AtimeNsec = 48, MtimeNsec = 52,
            CtimeNsec = 56, Mode = 60, NLink = 64, Uid = 68, Gid = 72, BlkSize = 80;
    }
    public static class AttrOut { public const int AttrValid = 0, AttrValidNsec = 8, Dummy = 12, Attr = 16; }
    public static class EntryOut
    {
        public const int NodeId = 0, Generation = 8, EntryValid = 16, AttrValid = 24, EntryValidNsec = 32, AttrValidNsec = 36, Attr = 40;
    }
    public static class OpenIn { public const int Flags = 0; }
    public static class OpenOut { public const int Fh = 0, OpenFlags = 8, BackingId = 12; }
    public static class ReleaseIn { public const int Fh = 0; }
    public static class ReadIn { public const int Fh = 0, Offset = 8, Size = 16, ReadFlags = 20, LockOwner = 24, Flags = 32; }
    /// <summary>Flags = the file's open flags, plus O_DSYNC/O_SYNC for a synchronous write (kernel fuse_write_flags).</summary>
    public static class WriteIn { public const int Fh = 0, Offset = 8, Size = 16, WriteFlags = 20, LockOwner = 24, Flags = 32; }
    public static class WriteOut { public const int Size = 0, Padding = 4; }
    public static class SetattrIn
    {
        public const int Valid = 0, Fh = 8, Size = 16, LockOwner = 24, Atime = 32, Mtime = 40, Ctime = 48, AtimeNsec = 56,
            MtimeNsec = 60, CtimeNsec = 64, Mode = 68, Uid = 76, Gid = 80;
    }
    public static class FallocateIn { public const int Fh = 0, Offset = 8, Length = 16, Mode = 24; }
    public static class LseekIn { public const int Fh = 0, Offset = 8, Whence = 16; }
    public static class LseekOut { public const int Offset = 0; }
    public static class StatfsOut
    {
        public const int Blocks = 0, Bfree = 8, Bavail = 16, Files = 24, Ffree = 32, Bsize = 40, NameLen = 44, Frsize = 48;
    }
    public static class AccessIn { public const int Mask = 0; }
    public static class GetxattrIn { public const int Size = 0; }
    public static class GetxattrOut { public const int Size = 0; }
    public static class SetxattrIn { public const int Size = 0, Flags = 4; }
    public static class Dirent { public const int Ino = 0, Off = 8, NameLen = 16, Type = 20; }
    public static class InterruptIn { public const int Unique = 0; }

    // Opcodes.
    public const uint LOOKUP = 1, FORGET = 2, GETATTR = 3, SETATTR = 4, READLINK = 5, SYMLINK = 6, MKNOD = 8,
        MKDIR = 9, UNLINK = 10, RMDIR = 11, RENAME = 12, LINK = 13, OPEN = 14, READ = 15, WRITE = 16, STATFS = 17,
        RELEASE = 18, FSYNC = 20, SETXATTR = 21, GETXATTR = 22, LISTXATTR = 23, REMOVEXATTR = 24, FLUSH = 25,
        INIT = 26, OPENDIR = 27, READDIR = 28, RELEASEDIR = 29, FSYNCDIR = 30, ACCESS = 34, CREATE = 35,
        INTERRUPT = 36, DESTROY = 38, BATCH_FORGET = 42, FALLOCATE = 43, READDIRPLUS = 44, RENAME2 = 45,
        LSEEK = 46, TMPFILE = 51;

    // INIT flags (64-bit: flags | flags2 << 32 when INIT_EXT).
    public const ulong ASYNC_READ = 1UL << 0, BIG_WRITES = 1UL << 5, DO_READDIRPLUS = 1UL << 13,
        ASYNC_DIO = 1UL << 15, PARALLEL_DIROPS = 1UL << 18, MAX_PAGES = 1UL << 22,
        HANDLE_KILLPRIV_V2 = 1UL << 28, INIT_EXT = 1UL << 30, DIRECT_IO_ALLOW_MMAP = 1UL << 36,
        PASSTHROUGH = 1UL << 37;

    /// <summary>Stacking depth we declare with PASSTHROUGH: our backing files live on ordinary filesystems.</summary>
    public const uint MaxStackDepth = 1;
    public const int ReleaseInSize = 24;

    // OPEN reply flags.
    public const uint FOPEN_DIRECT_IO = 1, FOPEN_KEEP_CACHE = 2, FOPEN_PARALLEL_DIRECT_WRITES = 64, FOPEN_PASSTHROUGH = 128;

    // SETATTR valid bits.
    public const uint FATTR_MODE = 1, FATTR_UID = 2, FATTR_GID = 4, FATTR_SIZE = 8, FATTR_ATIME = 16,
        FATTR_MTIME = 32, FATTR_ATIME_NOW = 128, FATTR_MTIME_NOW = 256, FATTR_CTIME = 1024,
        FATTR_KILL_SUIDGID = 2048;

    public const uint WRITE_KILL_SUIDGID = 4;

    // fallocate(2) modes.
    public const uint FALLOC_KEEP_SIZE = 0x01, FALLOC_PUNCH_HOLE = 0x02, FALLOC_ZERO_RANGE = 0x10;

    public const uint SEEK_DATA = 3, SEEK_HOLE = 4;

    // open(2) flags (x86-64 / generic).
    public const uint O_ACCMODE = 3, O_RDONLY = 0, O_DIRECT = 0x4000, O_TRUNC = 0x200;
    /// <summary>O_SYNC is __O_SYNC | O_DSYNC, so testing O_DSYNC catches both.</summary>
    public const uint O_DSYNC = 0x1000, O_SYNC = 0x101000;

    public const uint S_IFDIR = 0x4000, S_IFREG = 0x8000;
    public const uint DT_DIR = 4, DT_REG = 8;

    /// <summary>Request and reply size we negotiate (max_write; max_read is the same mount option).</summary>
    public const int MaxWrite = 1 << 20;
    /// <summary>A read of /dev/fuse must offer at least max_write + headers; one page of slack as libfuse does.</summary>
    public const int BufferSize = MaxWrite + 4096;

    public static string OpcodeName(uint op) => op switch
    {
        LOOKUP => "LOOKUP", FORGET => "FORGET", GETATTR => "GETATTR", SETATTR => "SETATTR", OPEN => "OPEN",
        READ => "READ", WRITE => "WRITE", STATFS => "STATFS", RELEASE => "RELEASE", FSYNC => "FSYNC",
        GETXATTR => "GETXATTR", LISTXATTR => "LISTXATTR", SETXATTR => "SETXATTR", REMOVEXATTR => "REMOVEXATTR",
        FLUSH => "FLUSH", INIT => "INIT", OPENDIR => "OPENDIR", READDIR => "READDIR", RELEASEDIR => "RELEASEDIR",
        FSYNCDIR => "FSYNCDIR", ACCESS => "ACCESS", CREATE => "CREATE", INTERRUPT => "INTERRUPT",
        DESTROY => "DESTROY", BATCH_FORGET => "BATCH_FORGET", FALLOCATE => "FALLOCATE",
        READDIRPLUS => "READDIRPLUS", LSEEK => "LSEEK", MKNOD => "MKNOD", MKDIR => "MKDIR", UNLINK => "UNLINK",
        RMDIR => "RMDIR", RENAME => "RENAME", RENAME2 => "RENAME2", LINK => "LINK", SYMLINK => "SYMLINK",
        READLINK => "READLINK", TMPFILE => "TMPFILE",
        _ => "OP" + op.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}
