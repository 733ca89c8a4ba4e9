// Real kernel: while the HTTP template stalls and every request thread's worth of template reads waits on it,
// local reads, writes and fsync through the view still complete, and a read interrupted by a signal returns
// EINTR at once instead of hanging until the server answers.
using System.Diagnostics;
using System.Globalization;
using Fvd.Core.Image;
using Fvd.Core.Tests;

namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class SlowTemplateKernelTests
{
    private const int Block = 4096, TemplateSize = 1 << 20;

    [Fact]
    public void Local_io_fsync_and_interrupts_keep_working_while_the_template_stalls()
    {
        Kernel.Require();
        Kernel.RequireTool("python3", "python3");
        using var dir = new TempDir();
        var template = Kernel.Pattern(TemplateSize, 9);
        using var web = new StallingHttpServer(template);
        FvdImage.Create(dir.File("vm.fvd"), new FvdCreateOptions
        {
            VirtualSize = 2 * TemplateSize, BackingFile = web.Url, BlockSize = Block, CopyOnRead = false,
        });
        using var img = FvdImage.Open(dir.File("vm.fvd"));
        string mnt = dir.File("mnt");
        Directory.CreateDirectory(mnt);
        string view = Path.Combine(mnt, "vm.raw");
        var stuck = new List<Process>();
        using (var server = FuseServer.Mount(mnt, "slow-template", [new FuseImage("vm.raw", img) { Locality = new ImageLocality(img) }],
                   new FuseOptions { Threads = 2 }))
        {
            try
            {
                web.Stall = true;
                // As many direct template reads as there are request threads, and one more.
                for (int i = 0; i < 3; i++)
                {
                    var psi = new ProcessStartInfo("dd") { UseShellExecute = false, RedirectStandardError = true };
                    foreach (var a in (string[])[$"if={view}", "of=/dev/null", $"bs={Block}", "count=1", $"skip={10 + i}", "iflag=direct", "status=none"])
                        psi.ArgumentList.Add(a);
                    stuck.Add(Process.Start(psi)!);
                }
                Kernel.WaitFor(() => web.Stalled == 2, 30, "two template reads to wait on the server");

                // Local I/O and fsync: past the template (free writes) and back, with O_DIRECT and fsync.
                string src = dir.File("src");
                File.WriteAllBytes(src, Kernel.Pattern(4 * Block, 10));
                var w = Kernel.RunIn(null, 30, "dd", $"if={src}", $"of={view}", $"bs={Block}", $"seek={TemplateSize / Block + 4}",
                    "oflag=direct", "conv=notrunc,fsync", "status=none");
                Assert.True(w.Rc == 0, w.Err);
                string back = dir.File("back");
                var r = Kernel.RunIn(null, 30, "dd", $"if={view}", $"of={back}", $"bs={Block}", "count=4",
                    $"skip={TemplateSize / Block + 4}", "iflag=direct", "status=none");
                Assert.True(r.Rc == 0, r.Err);
                Assert.Equal(File.ReadAllBytes(src), File.ReadAllBytes(back));

                // A template read interrupted by a handled signal comes back with EINTR (the process's handler
                // runs), not after the server answers.
                string script = string.Create(CultureInfo.InvariantCulture, $$"""
                    import os, signal
                    class Alarm(Exception): pass
                    def on_alarm(sig, frame): raise Alarm()
                    signal.signal(signal.SIGALRM, on_alarm)
                    fd = os.open("{{view}}", os.O_RDONLY | os.O_DIRECT)
                    signal.alarm(1)
                    try:
                        os.pread(fd, {{Block}}, {{20 * Block}})
                        print("read")
                    except Alarm:
                        print("interrupted")
                    """);
                var p = Kernel.RunIn(null, 30, "python3", "-c", script);
                Assert.True(p.Rc == 0, p.Err);
                Assert.Equal("interrupted", p.Out.Trim());
                Assert.False(stuck.Any(s => s.HasExited), "a stalled template read finished while the server stalled");
            }
            finally
            {
                web.Stall = false;
                foreach (var s in stuck)
                {
                    if (!s.WaitForExit(30_000)) s.Kill();
                }
            }
            foreach (var s in stuck) Assert.Equal(0, s.ExitCode); // released: they complete normally
        }
        foreach (var s in stuck) s.Dispose();
    }
}
