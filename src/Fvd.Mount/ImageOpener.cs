// How fvdmount turns an image argument into a device: an FVD image (recognized by its magic, never by its
// name) opens through the FVD driver with copy-on-read and prefetch started as the image's header says;
// anything else is served as a plain RAW file. The returned device must be Disposed, which flushes it and,
// for FVD, marks the image clean.
using Fvd.Core;
using Fvd.Core.Format;
using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Mount;

public static class ImageOpener
{
    /// <summary>Opens an image as a block device. Throws FvdException with a user-readable message.</summary>
    public static IBlockDevice Open(string path, bool readOnly)
    {
        if (IsFvd(path))
        {
            var img = FvdImage.Open(path, new FvdOpenOptions { ReadOnly = readOnly });
            try
            {
                if (img.WasUnclean && !readOnly)
                    Console.Error.WriteLine($"fvdmount: {path}: was not closed cleanly; flushed writes are intact (bits reach the disk only after their data)");
                img.StartBackgroundWork();
                return img;
            }
            catch
            {
                img.Dispose();
                throw;
            }
        }
        var dev = FileDevice.Open(path, readOnly);
        try
        {
            dev.Lock(exclusive: !readOnly); // two writers on one image would corrupt it
            return dev;
        }
        catch
        {
            dev.Dispose();
            throw;
        }
    }

    private static bool IsFvd(string path)
    {
        try
        {
            using var f = FileDevice.Open(path, readOnly: true);
            if (f.Length < FvdHeader.Magic.Length) return false;
            Span<byte> magic = stackalloc byte[8];
            f.Read(0, magic);
            return magic.SequenceEqual(FvdHeader.Magic);
        }
        catch (FvdException e) when (e.Kind == FvdErrorKind.NotFound)
        {
            throw new FvdException(FvdErrorKind.NotFound, "image not found", path);
        }
    }

    /// <summary>The name the image gets in the mount: "vm1.fvd" and "vm1.img" both become "vm1.raw".</summary>
    public static string DisplayName(string path) => Path.GetFileNameWithoutExtension(path) + ".raw";
}
