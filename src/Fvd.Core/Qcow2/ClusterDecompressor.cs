// Inflates one compressed qcow2 cluster: raw deflate (zlib type, no zlib header) or a zstd frame. The
// compressed length in the descriptor is an upper bound, so input may carry trailing bytes; decoding stops
// once the cluster is full, as qemu does. Anything that does not fill the cluster is corrupt.
using System.IO.Compression;

namespace Fvd.Core.Qcow2;

internal static class ClusterDecompressor
{
    public static void Decompress(Qcow2Compression type, byte[] src, int srcLength, Span<byte> cluster, long hostOffset, string? path)
    {
        try
        {
            using var input = new MemoryStream(src, 0, srcLength, writable: false);
            using Stream codec = type == Qcow2Compression.Zstd
                ? new ZstdSharp.DecompressionStream(input, checkEndOfStream: false)
                : new DeflateStream(input, CompressionMode.Decompress);
            int got = 0;
            while (got < cluster.Length)
            {
                int n = codec.Read(cluster[got..]);
                if (n == 0)
                    throw Corrupt(path, $"compressed cluster at {hostOffset} inflates to {got} bytes, not {cluster.Length}");
                got += n;
            }
        }
        catch (Exception e) when (e is InvalidDataException or IOException or ZstdSharp.ZstdException)
        {
            throw new FvdException(FvdErrorKind.CorruptImage, $"compressed cluster at {hostOffset} does not decompress: {e.Message}", path, e);
        }
    }

    private static FvdException Corrupt(string? path, string message) => new(FvdErrorKind.CorruptImage, message, path);
}
