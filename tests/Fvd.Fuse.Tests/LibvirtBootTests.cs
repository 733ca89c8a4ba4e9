// A guest booted through libvirt's QEMU driver (virt-qemu-run: the embedded driver, the same code as libvirtd)
// from the view, with libvirt's default qemu.conf: the DAC driver records the file's owner in trusted.* xattrs
// (remember_owner) and chowns it to the qemu user, then restores both when the guest stops. The guest is a
// 512-byte boot sector that prints a marker on the serial port; no KVM (TCG).
using System.Diagnostics;
using System.Text;
using Xunit.Abstractions;

namespace Fvd.Fuse.Tests;

[Collection("kernel")]
public sealed class LibvirtBootTests(ITestOutputHelper output)
{
    private const string Marker = "FVD-BOOT-OK";

    /// <summary>Real-mode code at 0x7c00: print Marker to COM1 (outb 0x3f8), then halt forever.</summary>
    internal static byte[] BootSector()
    {
        byte[] code =
        [
            0x31, 0xC0, 0x8E, 0xD8, 0xFC,       // xor ax,ax; mov ds,ax; cld
            0xBA, 0xF8, 0x03,                   // mov dx,0x3f8
            0xBE, 0x17, 0x7C,                   // mov si,0x7c17 (the message, 23 bytes in)
            0xAC, 0x84, 0xC0, 0x74, 0x03,       // next: lodsb; test al,al; jz done
            0xEE, 0xEB, 0xF8,                   // out dx,al; jmp next
            0xFA, 0xF4, 0xEB, 0xFD,             // done: cli; hlt; jmp hlt
        ];
        var sector = new byte[512];
        code.CopyTo(sector, 0);
        Encoding.ASCII.GetBytes(Marker + "\r\n\0").CopyTo(sector, code.Length);
        sector[510] = 0x55;
        sector[511] = 0xAA;
        return sector;
    }

    [Fact]
    public void Guest_boots_from_the_view_through_virt_qemu_run_with_default_qemu_conf()
    {
        Kernel.RequireTool("virt-qemu-run", "libvirt-daemon-driver-qemu");
        Kernel.RequireTool("virtlogd", "libvirt-daemon");
        Kernel.RequireTool("qemu-system-x86_64", "qemu-system-x86");
        Kernel.RequireTool("getfattr", "attr");
        Assert.True(Kernel.Run("getent", "passwd", "libvirt-qemu").Rc == 0,
            "user libvirt-qemu (libvirt's default qemu user) does not exist: run `make deps`");
        using var rig = new FvdRig(1 * FvdRig.Mib, 16 * FvdRig.Mib, seed: 5);
        // qemu runs as libvirt-qemu and must reach the mount point: the rig's directory is 0700.
        Kernel.Ok("chmod", "755", rig.Dir);
        rig.Mount("-o", "allow_other");
        string sector = Path.Combine(rig.Dir, "boot.bin");
        File.WriteAllBytes(sector, BootSector());
        Kernel.Ok("dd", $"if={sector}", $"of={rig.View}", "bs=512", "conv=notrunc,fsync", "status=none");

        string root = Path.Combine(rig.Dir, "libvirt");   // the embedded driver's root: no etc/qemu.conf in it
        string serial = Path.Combine(rig.Dir, "serial.log");
        string xml = Path.Combine(rig.Dir, "guest.xml");
        // ACPI on: without it libvirt 9.0 passes -no-acpi, which qemu 9.0 and later no longer accept.
        File.WriteAllText(xml, $"""
            <domain type='qemu'>
              <name>fvdboot</name>
              <memory unit='MiB'>32</memory>
              <vcpu>1</vcpu>
              <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
              <features><acpi/></features>
              <devices>
                <emulator>/usr/bin/qemu-system-x86_64</emulator>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='raw' cache='none'/>
                  <source file='{rig.View}'/>
                  <target dev='hda' bus='ide'/>
                </disk>
                <serial type='file'><source path='{serial}'/><target port='0'/></serial>
                <video><model type='none'/></video>
                <memballoon model='none'/>
              </devices>
            </domain>
            """);

        using var logd = StartVirtlogdIfAbsent();
        var psi = new ProcessStartInfo("virt-qemu-run") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "-r", root, "-v", xml }) psi.ArgumentList.Add(a);
        var log = new StringBuilder();
        using var run = Process.Start(psi)!;
        run.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.AppendLine(e.Data); };
        run.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.AppendLine(e.Data); };
        run.BeginOutputReadLine();
        run.BeginErrorReadLine();
        string Log() { lock (log) return log.ToString(); }
        try
        {
            // Probing qemu's capabilities and starting TCG take a while on a loaded machine.
            Kernel.WaitFor(() => run.HasExited || (File.Exists(serial) && File.ReadAllText(serial).Contains(Marker, StringComparison.Ordinal)),
                170, "the guest's marker on the serial port");
            Assert.False(run.HasExited, $"virt-qemu-run exited {(run.HasExited ? run.ExitCode : 0)}:\n{Log()}");
            Assert.False(File.Exists(Path.Combine(root, "etc", "qemu.conf")), "the test must run with libvirt's default qemu.conf");
            // While the guest runs: the remembered owner is in the view's xattrs and the file belongs to qemu.
            var dump = Kernel.Run("getfattr", "--absolute-names", "-d", "-m", "-", rig.View).Out;
            Assert.Contains("trusted.libvirt.security.dac=\"+0:+0\"", dump);
            Assert.Equal(Kernel.Run("id", "-u", "libvirt-qemu").Out.Trim(), Kernel.Run("stat", "-c", "%u", rig.View).Out.Trim());
        }
        finally
        {
            if (!run.HasExited) Assert.Equal(0, TestLibc.kill(run.Id, TestLibc.SIGINT)); // stops the guest, restores labels
            if (!run.WaitForExit(60_000)) { run.Kill(entireProcessTree: true); Assert.Fail($"virt-qemu-run ignored SIGINT:\n{Log()}"); }
            output.WriteLine(Log());
        }
        Assert.Equal("0:0", Kernel.Run("stat", "-c", "%u:%g", rig.View).Out.Trim());
        Assert.DoesNotContain("trusted.libvirt", Kernel.Run("getfattr", "--absolute-names", "-d", "-m", "-", rig.View).Out);
        rig.Unmount();
    }

    /// <summary>libvirt sends qemu's output through virtlogd; when no daemon answers on its socket, run one for the test.</summary>
    private static Owned StartVirtlogdIfAbsent()
    {
        const string sock = "/run/libvirt/virtlogd-sock";
        if (Answers(sock)) return new Owned(null);
        Directory.CreateDirectory("/var/log/libvirt");
        var p = Process.Start(new ProcessStartInfo("virtlogd") { UseShellExecute = false })!;
        Kernel.WaitFor(() => p.HasExited || Answers(sock), 30, "virtlogd's socket");
        Assert.False(p.HasExited, "virtlogd exited");
        return new Owned(p);
    }

    private static bool Answers(string path)
    {
        using var s = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        try { s.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(path)); return true; }
        catch (System.Net.Sockets.SocketException) { return false; }
    }

    /// <summary>A daemon the test started: SIGTERM (it removes its socket), then wait.</summary>
    private sealed class Owned(Process? p) : IDisposable
    {
        public void Dispose()
        {
            if (p is null) return;
            if (!p.HasExited) TestLibc.kill(p.Id, 15);
            if (!p.WaitForExit(10_000)) p.Kill();
            p.WaitForExit();
            p.Dispose();
        }
    }
}
