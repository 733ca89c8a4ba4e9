// fvd-img map [--output=human|json] IMAGE — where each range of the disk comes from.
using System.CommandLine;
using Fvd.Core.Image;

namespace Fvd.Img;

internal sealed class MapCommand(Cli cli) : InspectCommand(cli)
{
    protected override string Name => "map";
    protected override string Description => "Show which ranges are local data, local zeros, backing data or backing zeros.";


    protected override int Inspect(string path, bool json)
    {
        using var img = FvdImage.Open(path, new FvdOpenOptions { ReadOnly = true, NoLock = true, AllowMissingBacking = true });
        long dataBase = img.Header.InlineData ? img.Header.DataOffset : 0;
        string backing = img.BackingPath ?? (img.Header.HasBacking ? FvdImage.ResolveRelative(path, img.Header.BackingPath) : "");
        var o = Cli.Out;
        if (json)
        {
            // One object per line, as qemu-img map --output=json.
            bool first = true;
            o.Write('[');
            foreach (var e in img.Map())
            {
                if (!first) o.WriteLine(",");
                first = false;
                var (depth, zero, data, offset) = e.Kind switch
                {
                    MapKind.Data => (0, false, true, (long?)(dataBase + e.Offset)),
                    MapKind.Zero => (0, true, false, null),
                    MapKind.Backing => (1, false, true, e.Offset),
                    _ => (1, true, false, (long?)null),
                };
                o.Write($"{{ \"start\": {e.Offset}, \"length\": {e.Length}, \"depth\": {depth}, \"present\": true, " +
                        $"\"zero\": {(zero ? "true" : "false")}, \"data\": {(data ? "true" : "false")}" +
                        (offset is long off ? $", \"offset\": {off}}}" : "}"));
            }
            o.WriteLine("]");
            return ExitCode.Ok;
        }
        o.WriteLine($"{"Offset",-16}{"Length",-16}{"Kind",-16}{"Mapped to",-16}File");
        foreach (var e in img.Map())
        {
            var (kind, mapped, file) = e.Kind switch
            {
                MapKind.Data => ("data", $"0x{dataBase + e.Offset:x}", img.DataPath),
                MapKind.Zero => ("zero", "-", img.DataPath),
                MapKind.Backing => ("backing", $"0x{e.Offset:x}", backing),
                _ => ("backing-zero", "-", backing),
            };
            o.WriteLine($"{"0x" + e.Offset.ToString("x"),-16}{"0x" + e.Length.ToString("x"),-16}{kind,-16}{mapped,-16}{file}");
        }
        return ExitCode.Ok;
    }
}
