// fvd-img commit: the image's local blocks are written into its backing (raw or FVD), the backing is
// flushed, and only then is the image emptied (every bit 0, the data file punched). Clearing bits is the
// explicit offline operation that man/fvd.5 allows. A backing smaller than the disk is grown first, as
// qemu-img commit does. The backing is locked exclusively for the whole commit, so an image that reads it
// (mounted: shared lock) makes the commit fail instead of changing under it.
using Fvd.Core.Format;
using Fvd.Core.Io;

namespace Fvd.Core.Image.ImageOps;

public sealed record CommitOptions
{
    /// <summary>Leave the image as it is after the commit (qemu-img commit -d).</summary>
    public bool KeepImage { get; init; }
    public LockWait LockWait { get; init; } = LockWait.Default;
    public Action<long, long>? Progress { get; init; }
}

public static class Committer
{
    public static void Commit(string path, CommitOptions o)
    {
        var img = FvdImage.Open(path, new FvdOpenOptions { LockWait = o.LockWait, SkipBacking = true });
        IBlockDevice? backing = null;
        try
        {
            var h = img.Header;
            if (!h.HasBacking) throw new FvdException(FvdErrorKind.InvalidArgument, "image has no backing file to commit into", path);
            string backingPath = FvdImage.ResolveRelative(path, h.BackingPath);
            if (HttpRangeDevice.IsUrl(backingPath)) throw new FvdException(FvdErrorKind.UnsupportedFeature, "cannot commit into a remote (http) backing", backingPath);
            FileIdentity.RefuseAlias(backingPath, "backing file", img.Files.Take(h.InlineData ? 1 : 2));
            backing = OpenForWrite(path, backingPath, h.BackingFormat, h.VirtualSize, o.LockWait);
            var chain = FvdImage.ChainFiles(backing).Skip(1);
            FileIdentity.RefuseAlias(path, "image", chain);
            // Known before anything is written: the emptied image's header and bitmap.
            var next = Metadata.With(h, h.VirtualSize, Math.Min(backing.Length, h.VirtualSize), h.BackingPath, h.BackingFormat);
            if (h.InlineData && !o.KeepImage && FvdHeader.AlignUp(next.HeaderArea + next.BitmapLength, 4096) > h.DataOffset)
                throw new FvdException(FvdErrorKind.UnsupportedFeature, "the grown backing needs a bitmap larger than this inline-data image has room for; convert it to a separate data file first", path);

            var buf = new byte[1 << 20];
            long total = h.VirtualSize, done = 0;
            o.Progress?.Invoke(0, total);
            foreach (var m in img.Map())
            {
                if (m.Kind == MapKind.Zero) backing.WriteZeroes(m.Offset, m.Length);
                else if (m.Kind == MapKind.Data)
                {
                    for (long p = m.Offset; p < m.Offset + m.Length;)
                    {
                        int n = (int)Math.Min(buf.Length, m.Offset + m.Length - p);
                        img.Read(p, buf.AsSpan(0, n));
                        backing.Write(p, buf.AsSpan(0, n));
                        p += n;
                    }
                }
                done = m.Offset + m.Length;
                o.Progress?.Invoke(done, total);
            }
            // The backing's data must be durable before any bit says the image no longer holds it.
            backing.Flush();
            if (o.KeepImage) return;
            img.ReplaceMetadataAndClose(next, Metadata.Bits(next.BitmapBlocks, _ => false), discardData: true);
        }
        finally
        {
            img.Dispose();
            backing?.Dispose();
        }
    }

    /// <summary>The backing opened writable and exclusively locked, grown to size when it is smaller.</summary>
    private static IBlockDevice OpenForWrite(string imagePath, string backingPath, string format, long size, LockWait wait)
    {
        switch (format)
        {
            case "raw":
                if (FileKinds.Of(backingPath) != FileKind.Regular)
                    throw new FvdException(FvdErrorKind.InvalidArgument, "commit writes only a regular backing file", backingPath);
                var f = FileDevice.Open(backingPath, readOnly: false);
                try
                {
                    f.Lock(exclusive: true, LockWait.None);
                    if (f.Length < size) f.SetLength(size);
                    return f;
                }
                catch
                {
                    f.Dispose();
                    throw;
                }
            case "fvd":
                var above = FileIdentity.Of(imagePath) is { } id ? new[] { id } : [];
                var opts = new FvdOpenOptions { LockWait = LockWait.None, ChainAbove = above };
                long length;
                using (var probe = FvdImage.Open(backingPath, opts with { ReadOnly = true, SkipBacking = true })) length = probe.Length;
                if (length < size) Resizer.Resize(backingPath, size, new ResizeOptions { LockWait = LockWait.None });
                return FvdImage.Open(backingPath, opts);
            default:
                throw new FvdException(FvdErrorKind.UnsupportedFeature, $"cannot commit into a {format} backing (only raw or fvd)", backingPath);
        }
    }
}
