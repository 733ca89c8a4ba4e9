// A tiny HTTP/1.1 range server on 127.0.0.1 for one file, which can be told to stall: GETs then wait without
// answering until released or until the client gives up (closes the connection), as a template server that
// has become very slow would. Counts the GETs stalled right now.
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Fvd.Fuse.Tests;

internal sealed class StallingHttpServer : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly byte[] _content;
    private volatile bool _stall, _disposed;
    private int _stalled, _abandoned;

    public StallingHttpServer(byte[] content)
    {
        _content = content;
        _listener.Start();
        new Thread(Accept) { IsBackground = true, Name = "stalling-http" }.Start();
    }

    public string Url => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}/tpl.raw";

    /// <summary>While true, GETs wait; set false to let them (and later ones) through.</summary>
    public bool Stall { get => _stall; set => _stall = value; }

    /// <summary>GETs waiting right now.</summary>
    public int Stalled => Volatile.Read(ref _stalled);

    /// <summary>Stalled GETs whose client closed the connection before the answer.</summary>
    public int Abandoned => Volatile.Read(ref _abandoned);

    private void Accept()
    {
        while (!_disposed)
        {
            TcpClient c;
            try { c = _listener.AcceptTcpClient(); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or InvalidOperationException) { return; }
            new Thread(() => Serve(c)) { IsBackground = true }.Start();
        }
    }

    private void Serve(TcpClient client)
    {
        using var c = client;
        try
        {
            var s = c.GetStream();
            while (ReadHead(s) is { } head)
            {
                string[] lines = head.Split("\r\n");
                bool isHead = lines[0].StartsWith("HEAD ", StringComparison.Ordinal);
                if (isHead)
                {
                    Write(s, $"HTTP/1.1 200 OK\r\nContent-Length: {_content.Length}\r\nAccept-Ranges: bytes\r\n\r\n");
                    continue;
                }
                string range = lines.First(l => l.StartsWith("Range:", StringComparison.OrdinalIgnoreCase))["Range:".Length..].Trim();
                string[] ab = range["bytes=".Length..].Split('-');
                long a = long.Parse(ab[0], System.Globalization.CultureInfo.InvariantCulture);
                long b = long.Parse(ab[1], System.Globalization.CultureInfo.InvariantCulture);
                if (_stall && !WaitWhileStalled(c)) return;
                Write(s, $"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{_content.Length}\r\nContent-Length: {b - a + 1}\r\n\r\n");
                s.Write(_content, (int)a, (int)(b - a + 1));
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException) { }
    }

    /// <summary>False when the client went away while we stalled.</summary>
    private bool WaitWhileStalled(TcpClient c)
    {
        Interlocked.Increment(ref _stalled);
        try
        {
            while (_stall && !_disposed)
            {
                if (c.Client.Poll(20_000, SelectMode.SelectRead) && c.Client.Available == 0)
                {
                    Interlocked.Increment(ref _abandoned);
                    return false;
                }
            }
            return !_disposed;
        }
        finally
        {
            Interlocked.Decrement(ref _stalled);
        }
    }

    private static string? ReadHead(Stream s)
    {
        var sb = new StringBuilder();
        while (!sb.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
        {
            int ch = s.ReadByte();
            if (ch < 0) return null;
            sb.Append((char)ch);
        }
        return sb.ToString();
    }

    private static void Write(Stream s, string text) => s.Write(Encoding.ASCII.GetBytes(text));

    public void Dispose()
    {
        _disposed = true;
        _listener.Stop();
    }
}
