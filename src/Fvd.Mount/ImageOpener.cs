// How fvdmount turns an image argument into a device. This is the one place to change when the FVD driver
// is wired in: replace the body of Open with `return FvdImage.Open(path, options)` (the returned device must be
// Disposed, which flushes it and marks the image clean).
using Fvd.Core.Io;

namespace Fvd.Mount;

public static class ImageOpener
{
    /// <summary>Opens an image as a block device. Throws FvdException with a user-readable message.</summary>
    public static IBlockDevice Open(string path, bool readOnly)
    {
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

    /// <summary>The name the image gets in the mount: "vm1.fvd" and "vm1.img" both become "vm1.raw".</summary>
    public static string DisplayName(string path) => Path.GetFileNameWithoutExtension(path) + ".raw";
}
