// fvd-img rebase: point an image at another backing (or none) without changing what the disk reads. Safe
// mode compares, for every block still in the old backing, the old and the new backing's content; where
// they differ (or the block falls outside the new backing), the old content is written into the image and
// flushed (data -> fdatasync -> bits -> fdatasync) before the new bitmap and header are written. Unsafe
// mode (-u) only rewrites the reference: the caller vouches that the contents are equal.
using Fvd.Core.Io;

namespace Fvd.Core.Image.ImageOps;

public sealed record RebaseOptions
{
    /// <summary>New backing path or URL as it will be stored (relative to the image); null or "" = none.</summary>
    public string? Backing { get; init; }
    public string BackingFormat { get; init; } = "raw";
    /// <summary>Only rewrite the reference (qemu-img rebase -u).</summary>
    public bool Unsafe { get; init; }
    public LockWait LockWait { get; init; } = LockWait.Default;
    public Action<long, long>? Progress { get; init; }
}

public static class Rebaser
{
    public static void Rebase(string path, RebaseOptions o)
    {
        var img = FvdImage.Open(path, new FvdOpenOptions { LockWait = o.LockWait, SkipBacking = o.Unsafe });
        IBlockDevice? next = null;
        try
        {
            var h = img.Header;
            bool standalone = string.IsNullOrEmpty(o.Backing);
            if (!standalone)
            {
                string resolved = FvdImage.ResolveRelative(path, o.Backing!);
                var self = FileIdentity.Of(path) is { } id ? new[] { id } : [];
                next = FvdImage.OpenBacking(resolved, o.BackingFormat, new FvdOpenOptions { LockWait = o.LockWait, ChainAbove = self });
                // The image's own files must not be read as its template (nor appear further down the chain).
                IReadOnlyList<(string Path, string Role)> chain = [(resolved, "new backing file"), .. FvdImage.ChainFiles(next)];
                FileIdentity.RefuseAlias(path, "image", chain);
                if (!h.InlineData) FileIdentity.RefuseAlias(img.DataPath, "data file", chain);
            }
            long newBackingSize = next is null ? 0 : Math.Min(next.Length, h.VirtualSize);
            if (next is not null && newBackingSize == 0)
                throw new FvdException(FvdErrorKind.InvalidArgument, "new backing file is empty", o.Backing);
            var header = Metadata.With(h, h.VirtualSize, newBackingSize, o.Backing ?? "", o.BackingFormat);
            long newBlocks = header.BitmapBlocks;
            if (!o.Unsafe && h.HasBacking) CopyDiffering(img, next, newBackingSize, newBlocks, o.Progress);
            long oldBlocks = img.Bitmap.Blocks;
            // Blocks past the old bitmap were local (free writes), so they stay local under the new one.
            var bits = Metadata.Bits(newBlocks, b => b >= oldBlocks || img.Bitmap.Get(b));
            img.ReplaceMetadataAndClose(header, bits);
        }
        finally
        {
            img.Dispose();
            next?.Dispose();
        }
    }

    /// <summary>
    /// Makes local every block still in the old backing that would read differently over the new one: past
    /// the new bitmap (always local there), or with different bytes. Ends with a flush, so their bits are
    /// durable under the old header before the header changes.
    /// </summary>
    private static void CopyDiffering(FvdImage img, IBlockDevice? next, long newBackingSize, long newBlocks, Action<long, long>? progress)
    {
        int bs = img.BlockSize;
        var oldBuf = new byte[bs];
        var newBuf = new byte[bs];
        long end = img.BitmapEnd;
        progress?.Invoke(0, end);
        foreach (var m in img.Map(0, end).ToList())
        {
            if (m.Kind is MapKind.Data or MapKind.Zero) continue;
            for (long p = m.Offset; p < m.Offset + m.Length;)
            {
                long block = p / bs;
                long blockEnd = Math.Min((block + 1) * bs, img.Length);
                int n = (int)(blockEnd - block * bs);
                long start = block * bs;
                img.Read(start, oldBuf.AsSpan(0, n));
                bool differs = block >= newBlocks;
                if (!differs)
                {
                    int inNew = (int)Math.Clamp(newBackingSize - start, 0, n);
                    next!.Read(start, newBuf.AsSpan(0, inNew));
                    newBuf.AsSpan(inNew, n - inNew).Clear();
                    differs = !oldBuf.AsSpan(0, n).SequenceEqual(newBuf.AsSpan(0, n));
                }
                if (differs) img.Write(start, oldBuf.AsSpan(0, n));
                p = blockEnd;
                progress?.Invoke(p, end);
            }
        }
        img.Flush();
    }
}
