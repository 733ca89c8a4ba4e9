// A read-only backing image served over HTTP(S) with range requests (paper section 1: templates on remote
// storage). Every read is one ranged GET; transient failures are retried with back-off; a server that is
// gone gives FvdErrorKind.Io (the guest sees EIO) and nothing local changes.
using System.Net;
using System.Net.Http.Headers;

namespace Fvd.Core.Io;

public sealed class HttpRangeDevice : IBlockDevice
{
    private static readonly TimeSpan[] Backoff = { TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(400), TimeSpan.FromSeconds(1.6) };
    private readonly HttpClient _http;
    private readonly Uri _uri;

    public long Length { get; }
    public bool IsReadOnly => true;
    public string Url => _uri.ToString();

    private HttpRangeDevice(HttpClient http, Uri uri, long length)
    {
        _http = http;
        _uri = uri;
        Length = length;
    }

    public static bool IsUrl(string s) =>
        s.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || s.StartsWith("https://", StringComparison.OrdinalIgnoreCase);

    /// <summary>Connects, learns the size (HEAD) and checks that the server honours ranges.</summary>
    public static HttpRangeDevice Open(string url, TimeSpan? timeout = null)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || (uri.Scheme != "http" && uri.Scheme != "https"))
            throw new FvdException(FvdErrorKind.InvalidArgument, "not an http(s) URL", url);
        var handler = new SocketsHttpHandler
        {
            ConnectTimeout = TimeSpan.FromSeconds(10),
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            AutomaticDecompression = DecompressionMethods.None,
            UseProxy = false,
        };
        var http = new HttpClient(handler) { Timeout = timeout ?? TimeSpan.FromSeconds(30) };
        try
        {
            using var head = new HttpRequestMessage(HttpMethod.Head, uri);
            using var resp = Send(http, head, url);
            if (resp.StatusCode == HttpStatusCode.NotFound) throw new FvdException(FvdErrorKind.NotFound, "backing URL not found (HTTP 404)", url);
            if (!resp.IsSuccessStatusCode) throw new FvdException(FvdErrorKind.Io, $"backing server answered HTTP {(int)resp.StatusCode}", url);
            long? len = resp.Content.Headers.ContentLength;
            if (len is null or < 0) throw new FvdException(FvdErrorKind.Io, "backing server did not report a size (Content-Length)", url);
            if (!resp.Headers.AcceptRanges.Contains("bytes"))
                throw new FvdException(FvdErrorKind.NotSupported, "backing server does not accept range requests", url);
            return new HttpRangeDevice(http, uri, len.Value);
        }
        catch
        {
            http.Dispose();
            throw;
        }
    }

    private static HttpResponseMessage Send(HttpClient http, HttpRequestMessage req, string url, CancellationToken ct = default)
    {
        try
        {
            return http.Send(req, HttpCompletionOption.ResponseHeadersRead, ct);
        }
        catch (OperationCanceledException e) when (ct.IsCancellationRequested)
        {
            throw IoCancellation.Interrupted(url, e);
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or IOException)
        {
            throw new FvdException(FvdErrorKind.Io, $"backing server unreachable: {e.Message}", url, e);
        }
    }

    /// <summary>
    /// Reads with retries. A request being served for someone who can give up (IoCancellation.Current, set by
    /// the FUSE server) stops waiting at once when cancelled and throws FvdException(Interrupted).
    /// </summary>
    public void Read(long offset, Span<byte> buffer)
    {
        DeviceChecks.Range(this, offset, buffer.Length, Url);
        if (buffer.IsEmpty) return;
        var ct = IoCancellation.Current;
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                ReadOnce(offset, buffer, ct);
                return;
            }
            catch (FvdException e) when (e.Kind == FvdErrorKind.Io && attempt < Backoff.Length)
            {
                if (ct.WaitHandle.WaitOne(Backoff[attempt])) throw IoCancellation.Interrupted(Url, e);
            }
        }
    }

    private void ReadOnce(long offset, Span<byte> buffer, CancellationToken ct)
    {
        using var req = new HttpRequestMessage(HttpMethod.Get, _uri);
        req.Headers.Range = new RangeHeaderValue(offset, offset + buffer.Length - 1);
        using var resp = Send(_http, req, Url, ct);
        if (resp.StatusCode != HttpStatusCode.PartialContent)
            throw new FvdException(FvdErrorKind.Io, $"range read at {offset} answered HTTP {(int)resp.StatusCode}, not 206", Url);
        // A synchronous body read takes no token: cancelling disposes the response, which ends the read.
        using var cancel = ct.CanBeCanceled ? ct.Register(static r => ((HttpResponseMessage)r!).Dispose(), resp) : default;
        try
        {
            using var body = resp.Content.ReadAsStream();
            int got = 0;
            while (got < buffer.Length)
            {
                int n = body.Read(buffer[got..]);
                if (n == 0) throw new FvdException(FvdErrorKind.Io, $"range read at {offset} ended after {got} of {buffer.Length} bytes", Url);
                got += n;
            }
        }
        catch (Exception e) when (ct.IsCancellationRequested && e is IOException or HttpRequestException or OperationCanceledException or ObjectDisposedException)
        {
            throw IoCancellation.Interrupted(Url, e);
        }
        catch (Exception e) when (e is IOException or HttpRequestException or TaskCanceledException)
        {
            throw new FvdException(FvdErrorKind.Io, $"range read at {offset} failed: {e.Message}", Url, e);
        }
    }

    public void Write(long offset, ReadOnlySpan<byte> buffer) => DeviceChecks.Writable(this, Url);
    public void Flush() { }
    public void Discard(long offset, long length) => DeviceChecks.Writable(this, Url);
    public void WriteZeroes(long offset, long length) => DeviceChecks.Writable(this, Url);

    public Extent GetExtent(long offset, long maxLength)
    {
        DeviceChecks.Range(this, offset, 1, Url);
        return new Extent(ExtentKind.Data, offset, Math.Min(maxLength, Length - offset));
    }

    public void Dispose() => _http.Dispose();
}
