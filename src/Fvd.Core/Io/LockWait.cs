// Waiting for an image lock whose holder is on its way out. `umount` returns before the fvdmount daemon has
// flushed and closed its images, and a process killed with SIGKILL holds its locks until its files are
// closed in exit, so a script's next command would find the image "in use". A lock held by a closing or
// exiting process is waited for (bounded); a lock held by a live writer is refused at once.
//
// "Closing" is seen two ways (man/fvd.5, LOCKING):
//  - the owner marks it: at the start of FvdImage.Dispose (fvdmount: as soon as the kernel ends the FUSE
//    connection) it takes an open-file-description read lock on a byte far past the end of NAME.fvd
//    (FileDevice.MarkClosing), which any other open of the file can test with F_OFD_GETLK, in this process
//    or another;
//  - the kernel shows it: the flock holder's pid (from /proc/locks, matched by device and inode) is a zombie
//    or dead (state Z/X), has PF_EXITING set, or has SIGKILL pending.
using System.Diagnostics;
using System.Globalization;

namespace Fvd.Core.Io;

/// <summary>How long to wait for a lock held by a process that is closing the file or exiting.</summary>
/// <param name="Timeout">Upper bound; zero refuses at once, like a live holder.</param>
/// <param name="Notice">Told once, after a second of waiting, which process is waited for.</param>
public sealed record LockWait(TimeSpan Timeout, Action<string>? Notice = null)
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);
    public static LockWait Default { get; } = new(DefaultTimeout);
    public static LockWait None { get; } = new(TimeSpan.Zero);
}

internal enum HolderState { Live, Exiting, Gone }

/// <summary>Who holds a flock on a file, and whether that process is exiting (Linux /proc).</summary>
internal static class LockHolders
{
    private const uint PF_EXITING = 0x4;
    private const ulong SigKillBit = 1UL << (9 - 1);

    /// <summary>
    /// The pids holding a flock on the file that conflicts with the lock we want (any holder for an exclusive
    /// lock, exclusive holders for a shared one). Empty when /proc/locks cannot tell.
    /// </summary>
    public static List<int> Of(FileIdentity id, bool exclusive)
    {
        var pids = new List<int>();
        // /proc/locks prints the device as MAJOR:MINOR in hex; st_dev packs them as glibc's major()/minor().
        ulong major = ((id.Device >> 8) & 0xfff) | ((id.Device >> 32) & ~0xfffUL);
        ulong minor = (id.Device & 0xff) | ((id.Device >> 12) & ~0xffUL);
        string want = string.Create(CultureInfo.InvariantCulture, $"{major:x2}:{minor:x2}:{id.Inode}");
        try
        {
            foreach (var line in File.ReadLines("/proc/locks"))
            {
                // "1: FLOCK  ADVISORY  WRITE 2001 08:01:7864554 0 EOF"; waiters carry "->" and hold nothing.
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length < 6 || f[1] != "FLOCK" || f[5] != want) continue;
                if (!exclusive && f[3] != "WRITE") continue;
                if (int.TryParse(f[4], NumberStyles.Integer, CultureInfo.InvariantCulture, out int pid) && pid > 0) pids.Add(pid);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return pids;
    }

    public static HolderState State(int pid)
    {
        string stat, status;
        try
        {
            stat = File.ReadAllText($"/proc/{pid}/stat");
            status = File.ReadAllText($"/proc/{pid}/status");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return HolderState.Gone;
        }
        // proc_pid_stat(5): "pid (comm) state ppid pgrp session tty_nr tpgid flags ..."; comm may hold spaces.
        var f = stat[(stat.LastIndexOf(')') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (f.Length > 6)
        {
            if (f[0] is "Z" or "X" or "x") return HolderState.Exiting;
            if (uint.TryParse(f[6], NumberStyles.Integer, CultureInfo.InvariantCulture, out uint flags) && (flags & PF_EXITING) != 0)
                return HolderState.Exiting;
        }
        foreach (var line in status.Split('\n'))
        {
            if (!line.StartsWith("ShdPnd:", StringComparison.Ordinal) && !line.StartsWith("SigPnd:", StringComparison.Ordinal)) continue;
            if (ulong.TryParse(line[7..].Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong mask) && (mask & SigKillBit) != 0)
                return HolderState.Exiting;
        }
        return HolderState.Live;
    }

    /// <summary>
    /// Runs tryLock until it succeeds. While it fails because of a holder that is closing (closingMarked) or
    /// exiting, waits up to wait.Timeout; a live holder, or the timeout, ends in refuse(pid or 0, timedOut).
    /// </summary>
    private const int PollMs = 50;
    private const int LiveChecks = 4;     // a live holder is refused after ~0.2 s
    private const int UnknownChecks = 20;

    public static void Wait(FileIdentity id, bool exclusive, LockWait wait, Func<bool> tryLock, Func<bool> closingMarked,
        Func<int, bool, Exception> refuse, string path)
    {
        var sw = Stopwatch.StartNew();
        bool told = false;
        int unsure = 0;
        while (!tryLock())
        {
            if (wait.Timeout <= TimeSpan.Zero) throw refuse(0, false);
            var holders = Of(id, exclusive);
            var states = holders.Select(State).ToList();
            bool marked = closingMarked();
            bool exiting = states.Count > 0 && states.All(s => s != HolderState.Live);
            int pid = holders.Count > 0 ? holders[0] : 0;
            if (!marked && !exiting)
            {
                // A live holder: look again for a moment (LiveChecks), since a daemon that umount has just
                // disconnected needs a few milliseconds to mark its images closing. No holder listed (it let
                // go between our calls, or /proc does not show it): retry for up to a second.
                if (++unsure > (holders.Count > 0 ? LiveChecks : UnknownChecks)) throw refuse(pid, false);
            }
            else
            {
                unsure = 0;
            }
            if (sw.Elapsed >= wait.Timeout) throw refuse(pid, true);
            if (!told && sw.Elapsed >= TimeSpan.FromSeconds(1) && wait.Notice is { } notice)
            {
                told = true;
                notice(pid > 0
                    ? $"{path}: waiting for process {pid}, which is closing the image, to release it (up to {wait.Timeout.TotalSeconds:0} s)"
                    : $"{path}: waiting for the process closing the image to release it (up to {wait.Timeout.TotalSeconds:0} s)");
            }
            Thread.Sleep(PollMs);
        }
    }
}
