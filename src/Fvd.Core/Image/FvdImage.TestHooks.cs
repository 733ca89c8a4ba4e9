// Test-only injection point, kept in its own file: wraps the data device of an image that was just opened
// (e.g. in a RecordingDevice) so tests can observe the order of data writes, data flushes and bitmap
// updates. Call it right after Open, before any I/O.
using Fvd.Core.Io;

namespace Fvd.Core.Image;

public sealed partial class FvdImage
{
    internal void WrapDataDeviceForTests(Func<IBlockDevice, IBlockDevice> wrap)
    {
        ThrowIfDisposed();
        _data = wrap(_data);
    }
}
