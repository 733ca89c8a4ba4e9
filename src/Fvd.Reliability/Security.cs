// Security checks on paths named by an image header (docs/architecture.md §5): the backing format is never
// probed, relative paths resolve against the image's directory, and a backing (or data file, or image)
// that is a FIFO, character device, directory or block device is refused without blocking.
using Fvd.Core;
using Fvd.Core.Format;
using Fvd.Core.Image;
using Fvd.Core.Io;

namespace Fvd.Reliability;

public static class SecurityChecks
{
    public static readonly TimeSpan HangLimit = TimeSpan.FromSeconds(5);

    public static HarnessResult Run()
    {
        var result = new HarnessResult("security");
        string dir = Directory.CreateTempSubdirectory("fvd-sec-").FullName;
        var fifos = new List<string>();
        try
        {
            string Fifo(string name)
            {
                string p = Path.Combine(dir, name);
                if (Mono.Unix.Native.Syscall.mkfifo(p, Mono.Unix.Native.FilePermissions.S_IRUSR | Mono.Unix.Native.FilePermissions.S_IWUSR) != 0) throw Libc.Error("mkfifo", p);
                fifos.Add(p);
                return p;
            }
            var baseBytes = new byte[256 << 10];
            new Random(5).NextBytes(baseBytes);
            File.WriteAllBytes(Path.Combine(dir, "base.raw"), baseBytes);
            string Image(string name, string backing = "base.raw")
            {
                string p = Path.Combine(dir, name);
                FvdImage.Create(p, new FvdCreateOptions { VirtualSize = 512 << 10, BackingFile = backing, Overwrite = true, ZeroAware = false });
                return p;
            }
            // An image whose header names something else (written after create, CRC recomputed).
            string Rewrite(string name, Func<FvdHeader, FvdHeader> change)
            {
                string p = Image(name);
                var bytes = File.ReadAllBytes(p);
                HeaderSlots.Initial(change(FvdHeader.Parse(bytes))).CopyTo(bytes, 0); // every copy, so none is left to fall back on
                File.WriteAllBytes(p, bytes);
                return p;
            }
            void Refused(string what, string image, FvdOpenOptions? o = null) =>
                Check(result, what, () =>
                {
                    try
                    {
                        using var img = FvdImage.Open(image, o ?? new FvdOpenOptions { ReadOnly = true });
                        return $"opened (backing {img.BackingPath})";
                    }
                    catch (FvdException) { return null; }
                });

            Refused("backing is a FIFO", Rewrite("fifo.fvd", h => h with { BackingPath = Path.GetFileName(Fifo("pipe")) }));
            Refused("backing is a symlink to a FIFO", Rewrite("fifolink.fvd", h =>
            {
                File.CreateSymbolicLink(Path.Combine(dir, "pipelink"), Fifo("pipe2"));
                return h with { BackingPath = "pipelink" };
            }));
            Refused("backing is /dev/zero (character device)", Rewrite("zero.fvd", h => h with { BackingPath = "/dev/zero" }));
            Refused("backing is /dev/null (character device)", Rewrite("null.fvd", h => h with { BackingPath = "/dev/null" }));
            Refused("backing is a directory", Rewrite("dir.fvd", h => h with { BackingPath = "/tmp" }));
            Refused("backing format qcow2 over a raw file (formats are never probed)", Rewrite("qcow.fvd", h => h with { BackingFormat = "qcow2" }));
            Refused("backing path with a protocol prefix (nbd:)", Rewrite("nbd.fvd", h => h with { BackingPath = "nbd:localhost:10809" }));
            Refused("backing path json:{...}", Rewrite("json.fvd", h => h with { BackingPath = "json:{\"file.filename\":\"/etc/passwd\"}" }));
            Refused("data file outside the image directory (../)", Rewrite("dotdot.fvd", h => h with { DataFile = "../x.data" }));
            Refused("data file is a FIFO", Rewrite("datafifo.fvd", h => h with { DataFile = Path.GetFileName(Fifo("datapipe")) }));
            Refused("image path is a FIFO", Fifo("image-pipe.fvd"));
            Refused("image path is a directory", dir);
            string? blockDev = new[] { "/dev/loop0", "/dev/vda", "/dev/sda", "/dev/nvme0n1" }.FirstOrDefault(p => FileKinds.Of(p) == FileKind.BlockDevice);
            if (blockDev is not null) Refused($"backing is a block device ({blockDev}) without allow_device_backing", Rewrite("blk.fvd", h => h with { BackingPath = blockDev }));
            else result.Notes.Add("security: no block device found; block-device backing check skipped");

            // Relative paths resolve against the image's directory, not the working directory.
            string sub = Directory.CreateDirectory(Path.Combine(dir, "sub")).FullName;
            FvdImage.Create(Path.Combine(sub, "rel.fvd"), new FvdCreateOptions { VirtualSize = 512 << 10, BackingFile = "../base.raw", ZeroAware = false });
            Check(result, "relative backing path resolves against the image directory", () =>
            {
                using var img = FvdImage.Open(Path.Combine(sub, "rel.fvd"), new FvdOpenOptions { ReadOnly = true });
                if (img.BackingPath != Path.Combine(dir, "base.raw")) return $"resolved to {img.BackingPath}";
                var b = new byte[4096];
                img.Read(8192, b);
                return b.AsSpan().SequenceEqual(baseBytes.AsSpan(8192, 4096)) ? null : "reads differ from the backing";
            });

            // Never probed: a backing that is itself an FVD image (whose own backing is a FIFO) is read raw.
            string inner = Rewrite("inner.fvd", h => h with { BackingPath = Path.GetFileName(Fifo("inner-pipe")) });
            string outer = Path.Combine(dir, "outer.fvd");
            FvdImage.Create(outer, new FvdCreateOptions { VirtualSize = 512 << 10, BackingFile = Path.GetFileName(inner), ZeroAware = false });
            Check(result, "a backing that holds an FVD header is read as raw bytes, never probed", () =>
            {
                using var img = FvdImage.Open(outer, new FvdOpenOptions { ReadOnly = true });
                var b = new byte[4096];
                img.Read(0, b);
                return b.AsSpan().SequenceEqual(File.ReadAllBytes(inner).AsSpan(0, 4096)) ? null : "reads differ from the raw backing bytes";
            });
        }
        catch (Exception e)
        {
            result.Fail($"security: setup failed: {e.GetType().Name}: {e.Message}");
        }
        finally
        {
            // Release any thread still blocked opening a FIFO for reading, then clean up.
            foreach (var f in fifos)
            {
                int fd = Libc.open(f, Libc.O_WRONLY | Libc.O_NONBLOCK, 0);
                if (fd >= 0) Libc.close(fd);
            }
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
        return result;
    }

    /// <summary>Runs a check on its own thread: null = pass; an exception other than FvdException, or no answer within HangLimit, fails.</summary>
    private static void Check(HarnessResult result, string what, Func<string?> check)
    {
        string? outcome = "did not finish";
        var t = new Thread(() =>
        {
            try { outcome = check(); }
            catch (FvdException e) { outcome = $"FvdException: {e.Message}"; }
            catch (Exception e) { outcome = $"{e.GetType().Name}: {e.Message}"; }
        }) { IsBackground = true };
        t.Start();
        if (!t.Join(HangLimit)) result.Fail($"security: {what}: blocked for more than {HangLimit.TotalSeconds} s");
        else if (outcome is not null) result.Fail($"security: {what}: {outcome}");
        else result.Pass();
    }
}
