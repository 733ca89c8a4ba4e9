// fvd-bench-tool create IMAGE.fvd SIZE_BYTES [BACKING.raw]
// fvd-bench-tool mount IMAGE.fvd MOUNTPOINT [THREADS]   (foreground; SIGTERM/SIGINT unmount and exit)
// fvd-bench-tool info IMAGE.fvd                          (block size, bitmap/metadata size)
using System.Runtime.InteropServices;
using Fvd.Core;
using Fvd.Core.Image;
using Fvd.Fuse;

static int Usage()
{
    Console.Error.WriteLine("usage: fvd-bench-tool create IMAGE SIZE [BACKING] | mount IMAGE MOUNTPOINT [THREADS] | info IMAGE");
    return 2;
}

if (args.Length < 2) return Usage();
try
{
    switch (args[0])
    {
        case "create":
        {
            long size = long.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture);
            FvdImage.Create(args[1], new FvdCreateOptions
            {
                VirtualSize = size,
                BackingFile = args.Length > 3 ? args[3] : null,
                BackingFormat = "raw",
                Overwrite = true,
            });
            return 0;
        }
        case "info":
        {
            using var img = FvdImage.Open(args[1], new FvdOpenOptions { ReadOnly = true, NoLock = true });
            Console.WriteLine($"block_size={img.BlockSize} virtual_size={img.Length} backing_size={img.BackingSize} data={img.DataPath}");
            return 0;
        }
        case "mount":
        {
            if (args.Length < 3) return Usage();
            int threads = args.Length > 3 ? int.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture) : 4;
            var img = FvdImage.Open(args[1]);
            var name = Path.GetFileNameWithoutExtension(args[1]) + ".raw";
            var server = FuseServer.Mount(args[2], Path.GetFullPath(args[1]), [new FuseImage(name, img)],
                new FuseOptions { Threads = threads });
            Console.Out.WriteLine("OK");
            Console.Out.Flush();
            return server.RunUntilStopped(() => { img.Flush(); img.Dispose(); });
        }
        default:
            return Usage();
    }
}
catch (FvdException e)
{
    Console.Error.WriteLine($"fvd-bench-tool: {e.OneLine}");
    return 1;
}
