// fvd-img resize: grow the virtual disk (new space is local, free-write space past the bitmap), or shrink
// it with explicit consent. The bitmap only ever shrinks with the disk: it covers min(backing, disk).
using Fvd.Core.Format;
using Fvd.Core.Io;

namespace Fvd.Core.Image.ImageOps;

public sealed record ResizeOptions
{
    /// <summary>Allow a smaller size (qemu-img resize --shrink).</summary>
    public bool Shrink { get; init; }
    /// <summary>Cut even data that the disk shows past the new end.</summary>
    public bool Force { get; init; }
    public LockWait LockWait { get; init; } = LockWait.Default;
}

public static class Resizer
{
    /// <summary>Resizes an image that nobody else has open; returns the new size (rounded up to 512).</summary>
    public static long Resize(string path, long newSize, ResizeOptions o)
    {
        long size = newSize <= 0 ? 0 : FvdHeader.AlignUp(newSize, 512);
        if (size <= 0 || size > FvdHeader.MaxVirtualSize)
            throw new FvdException(FvdErrorKind.InvalidArgument, $"new size {newSize} must be between 1 byte and 64 TiB", path);
        var img = FvdImage.Open(path, new FvdOpenOptions { LockWait = o.LockWait, AllowMissingBacking = o.Force });
        try
        {
            var h = img.Header;
            if (size < h.VirtualSize)
            {
                if (!o.Shrink)
                    throw new FvdException(FvdErrorKind.InvalidArgument, "Use the --shrink option to perform a shrink operation.", path);
                if (!o.Force)
                {
                    // Written data, or template data the disk shows, would be lost.
                    foreach (var m in img.Map(size, h.VirtualSize - size))
                    {
                        if (m.Kind is MapKind.Data or MapKind.Backing)
                            throw new FvdException(FvdErrorKind.InvalidArgument,
                                $"shrinking would discard data at offset {m.Offset} ({m.Kind switch { MapKind.Data => "written to the image", _ => "from the backing" }}); use --force to discard it", path);
                    }
                }
            }
            long backingSize = Math.Min(h.BackingSize, size);
            var next = Metadata.With(h, size, backingSize, h.BackingPath, h.BackingFormat);
            long blocks = next.BitmapBlocks;
            var bits = Metadata.Bits(blocks, img.Bitmap.Get);
            img.ReplaceMetadataAndClose(next, bits);
            return size;
        }
        finally
        {
            img.Dispose();
        }
    }
}
