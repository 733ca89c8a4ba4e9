// The live counters of an image that fvdmount serves: found through /proc/self/mounts (type fuse.fvd,
// source = the comma-separated full paths of its images) and read from MOUNT/.fvd/NAME.json.
using System.Text;
using System.Text.Json;

namespace Fvd.Img;

internal static class LiveStatus
{
    /// <summary>The mount point and status JSON of the image, or null when no fvdmount serves it.</summary>
    public static (string MountPoint, JsonElement Status)? Find(string imagePath, string mounts = "/proc/self/mounts")
    {
        string full = Path.GetFullPath(imagePath);
        if (!File.Exists(mounts)) return null;
        foreach (var line in File.ReadLines(mounts))
        {
            var f = line.Split(' ');
            if (f.Length < 3 || f[2] != "fuse.fvd") continue;
            if (!Unescape(f[0]).Split(',').Contains(full)) continue;
            string file = Path.Combine(Unescape(f[1]), ".fvd", Path.GetFileNameWithoutExtension(full) + ".json");
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllBytes(file));
                return (Unescape(f[1]), doc.RootElement.Clone());
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
            {
                return null; // mounted by an fvdmount without status files, or it is going away
            }
        }
        return null;
    }

    /// <summary>/proc/mounts writes space, tab, newline and backslash as \ooo octal escapes.</summary>
    private static string Unescape(string s)
    {
        if (!s.Contains('\\')) return s;
        var sb = new StringBuilder();
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && IsOctal(s, i + 1))
            {
                sb.Append((char)Convert.ToInt32(s.Substring(i + 1, 3), 8));
                i += 3;
            }
            else sb.Append(s[i]);
        }
        return sb.ToString();
    }

    private static bool IsOctal(string s, int at) =>
        at + 3 <= s.Length && s[at] is >= '0' and <= '7' && s[at + 1] is >= '0' and <= '7' && s[at + 2] is >= '0' and <= '7';
}
