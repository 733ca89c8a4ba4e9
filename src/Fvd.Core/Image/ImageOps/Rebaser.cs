// fvd-img rebase: point an image at another backing (or none) without changing what the disk reads. Safe
// mode compares, for every block still in the old backing, the old and the new backing's content; where
// they differ (or the block falls outside the new backing), the old content is written into the image and
// flushed (data -> fdatasync -> bits -> fdatasync) before the new bitmap and header are written. Unsafe
// mode (-u) only rewrites the reference: the caller vouches that the contents are equal.
using Fvd.Core.Format;
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
        int chunk = Math.Max(bs, 1 << 20); // whole blocks, read in 1 MiB pieces
        var oldBuf = new byte[chunk];
        var newBuf = new byte[chunk];
        long end = img.BlockMap.MappedEnd;
        progress?.Invoke(0, end);
        foreach (var m in img.Map(0, end).ToList())
        {
            if (m.Kind is MapKind.Data or MapKind.Zero) continue;
            long start = m.Offset / bs * bs;
            long stop = Math.Min(FvdHeader.AlignUp(m.Offset + m.Length, bs), end);
            for (long p = start; p < stop;)
            {
                int n = (int)Math.Min(chunk, stop - p);
                img.Read(p, oldBuf.AsSpan(0, n));
                int inNew = (int)Math.Clamp(newBackingSize - p, 0, n);
                if (inNew > 0) next!.Read(p, newBuf.AsSpan(0, inNew));
                newBuf.AsSpan(inNew, n - inNew).Clear();
                for (int off = 0; off < n; off += bs)
                {
                    int len = Math.Min(bs, n - off);
                    bool differs = (p + off) / bs >= newBlocks
                        || !oldBuf.AsSpan(off, len).SequenceEqual(newBuf.AsSpan(off, len));
                    if (differs) img.Write(p + off, oldBuf.AsSpan(off, len));
                }
                p += n;
                progress?.Invoke(p, end);
            }
        }
        img.Flush();
    }
}
