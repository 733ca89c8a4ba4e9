using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Fvd.Core.Tests;

/// <summary>A real nginx serving a directory on 127.0.0.1 (remote-template tests; no mocks).</summary>
public sealed class NginxServer : IDisposable
{
    private readonly TempDir _dir = new();
    private Process? _proc;
    public string Root => _dir.File("www");
    public int Port { get; }
    public string Url(string name) => $"http://127.0.0.1:{Port}/{name}";

    /// <summary>With netns, nginx runs inside that network namespace (ip netns exec), on its loopback.</summary>
    private readonly string? _netns;

    public NginxServer(int limitRateBytes = 0, string? netns = null)
    {
        _netns = netns;
        if (!File.Exists("/usr/sbin/nginx")) throw new InvalidOperationException("nginx is not installed: run 'make deps' (package nginx-light)");
        Directory.CreateDirectory(Root);
        Directory.CreateDirectory(_dir.File("tmp"));
        if (netns is null)
        {
            var l = new TcpListener(IPAddress.Loopback, 0);
            l.Start();
            Port = ((IPEndPoint)l.LocalEndpoint).Port;
            l.Stop();
        }
        else Port = 8080; // a fresh namespace has nothing listening
        string d = _dir.Path;
        File.WriteAllText(_dir.File("nginx.conf"), $$"""
            user root;
            worker_processes 1;
            daemon off;
            pid {{d}}/nginx.pid;
            error_log {{d}}/error.log;
            events { worker_connections 64; }
            http {
              access_log off;
              client_body_temp_path {{d}}/tmp/body;
              proxy_temp_path {{d}}/tmp/proxy;
              fastcgi_temp_path {{d}}/tmp/fcgi;
              uwsgi_temp_path {{d}}/tmp/uwsgi;
              scgi_temp_path {{d}}/tmp/scgi;
              server {
                listen 127.0.0.1:{{Port}};
                root {{Root}};
                {{(limitRateBytes > 0 ? $"limit_rate {limitRateBytes};" : "")}}
              }
            }
            """);
        Start();
    }

    public void Start()
    {
        string args = $"-c {_dir.File("nginx.conf")} -p {_dir.Path}";
        _proc = Process.Start(_netns is null
            ? new ProcessStartInfo("/usr/sbin/nginx", args) { RedirectStandardError = true, UseShellExecute = false }
            : new ProcessStartInfo("ip", $"netns exec {_netns} /usr/sbin/nginx {args}") { RedirectStandardError = true, UseShellExecute = false })!;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(10))
        {
            if (_netns is not null)
            {
                if (File.Exists(_dir.File("nginx.pid"))) { Thread.Sleep(200); return; }
                Thread.Sleep(50);
                continue;
            }
            try
            {
                using var c = new TcpClient();
                c.Connect(IPAddress.Loopback, Port);
                return;
            }
            catch (SocketException) { Thread.Sleep(50); }
            if (_proc.HasExited) throw new InvalidOperationException($"nginx exited: {_proc.StandardError.ReadToEnd()} {File.ReadAllText(_dir.File("error.log"))}");
        }
        throw new TimeoutException("nginx did not start listening");
    }

    public void Stop()
    {
        if (_proc is { HasExited: false })
        {
            _proc.Kill(entireProcessTree: true);
            _proc.WaitForExit();
        }
        // The master's workers are children; make sure nothing listens any more.
        if (File.Exists(_dir.File("nginx.pid")))
        {
            try { Process.GetProcessById(int.Parse(File.ReadAllText(_dir.File("nginx.pid")).Trim())).Kill(true); } catch (ArgumentException) { } catch (InvalidOperationException) { }
        }
    }

    public void Dispose()
    {
        Stop();
        _dir.Dispose();
    }
}
