// Offline metadata changes (fvd-img resize, rebase, commit): the header and bitmap are replaced while the
// image is open exclusively, and the image is closed at once (its bitmap in memory no longer matches).
using Fvd.Core.Format;
using Fvd.Core.Io;

namespace Fvd.Core.Image;

public sealed partial class FvdImage
{
    /// <summary>
    /// Flushes, then writes bitmap (the new bitmap's bytes) and syncs it, then writes h as the current header
    /// (two-slot atomic update), then closes the image. A larger disk's new range is cut to zeros before the
    /// header names it; a smaller disk's data file is cut after. discardData punches the whole data file
    /// after the header (commit: nothing is local any more).
    /// </summary>
    internal void ReplaceMetadataAndClose(FvdHeader h, byte[] bitmap, bool discardData = false)
    {
        ThrowIfDisposed();
        if (IsReadOnly) throw new FvdException(FvdErrorKind.ReadOnly, "image is open read-only", Path);
        try
        {
            lock (_metadata.Gate)
            {
                Flush();
                var meta = (FileDevice)_metadata.Device;
                var header = _metadata.Header;
                var data = _data.Device;
                long oldSize = header.VirtualSize;
                long metaEnd = h.BitmapLength == 0 ? h.HeaderArea : FvdHeader.AlignUp(h.BitmapOffset + h.BitmapLength, 4096);
                if (h.InlineData)
                {
                    if (h.DataOffset != header.DataOffset || metaEnd > h.DataOffset)
                        throw new FvdException(FvdErrorKind.UnsupportedFeature, "the bitmap would have to grow into the inline data; convert the image to a separate data file first", Path);
                    if (h.VirtualSize > oldSize) Regrow(meta, h.DataOffset + oldSize, h.DataOffset + h.VirtualSize);
                }
                else
                {
                    if (meta.Length < metaEnd) meta.SetLength(metaEnd);
                    // A data file longer than the disk keeps bytes the disk never showed: cut them before growing.
                    if (h.VirtualSize > oldSize) Regrow((FileDevice)data, oldSize, h.VirtualSize);
                }
                if (bitmap.Length > 0) meta.Write(h.BitmapOffset, bitmap);
                _metadata.SyncFile(meta, "metadata sync");
                h.Validate(meta.Length, Path);
                _metadata.ReplaceHeader(h with { Flags = h.Flags & ~HeaderFlags.CleanShutdown });
                if (h.VirtualSize < oldSize)
                {
                    if (h.InlineData) meta.SetLength(h.DataOffset + h.VirtualSize);
                    else ((FileDevice)data).SetLength(h.VirtualSize);
                }
                if (discardData) data.Discard(0, Math.Min(data.Length, h.VirtualSize));
            }
        }
        finally
        {
            Dispose();
        }
    }

    private void Regrow(FileDevice f, long oldEnd, long newEnd)
    {
        f.SetLength(oldEnd);
        f.SetLength(newEnd);
        _metadata.SyncFile(f, "data sync");
    }
}
