// Offline consistency check and repair (fvd-img check). Works on the raw files rather than through
// FvdImage.Open, so it can report on images Open refuses: header fields, bitmap tail bits, region bounds,
// the data file's presence and length, the backing's presence and size, and the clean flag.
//
// Severities follow qemu-img check: an Error is corruption (exit 2), Repairable is what -r fixes without
// losing data (exit 3 while left), CheckFailed means the check could not run or complete (exit 1).
// Repair order keeps the durability rule: data file grown and synced, then the header rewritten and synced.
using Fvd.Core.Format;
using Fvd.Core.Image.Mapping;
using Fvd.Core.Io;

namespace Fvd.Core.Image;

public enum CheckSeverity
{
    Info,
    Repairable,
    Error,
    CheckFailed,
}

public enum RepairMode
{
    None,
    /// <summary>Fix what loses nothing: a short data file, the clean flag.</summary>
    Leaks,
    /// <summary>Also fix errors that have a safe fix: stray bitmap tail bits, a stale corrupt mark.</summary>
    All,
}

public sealed record CheckMessage(CheckSeverity Severity, string Text, bool Fixed = false);

public sealed class CheckReport
{
    public required string Path { get; init; }
    public List<CheckMessage> Messages { get; } = new();
    public int Errors => Messages.Count(m => m.Severity == CheckSeverity.Error && !m.Fixed);
    public int Repairable => Messages.Count(m => m.Severity == CheckSeverity.Repairable && !m.Fixed);
    public int Fixed => Messages.Count(m => m.Fixed);
    public bool CheckFailed => Messages.Any(m => m.Severity == CheckSeverity.CheckFailed);
    public long BlocksLocal { get; internal set; }
    public long BlocksTotal { get; internal set; }
    public long VirtualSize { get; internal set; }

    /// <summary>qemu-img check's exit code: 0 clean, 1 could not check, 2 corruption, 3 repairable left.</summary>
    public int ExitCode => CheckFailed ? 1 : Errors > 0 ? 2 : Repairable > 0 ? 3 : 0;

    internal void Add(CheckSeverity s, string text, bool fixedIt = false) => Messages.Add(new CheckMessage(s, text, fixedIt));
}

public static class ImageChecker
{
    /// <summary>Checks (and with repair, repairs) an image; progress gets (bytes scanned, bytes to scan).</summary>
    /// <remarks>wait: how long to wait for a lock held by a process closing the image (default 30 s).</remarks>
    public static CheckReport Check(string path, RepairMode repair = RepairMode.None, Action<long, long>? progress = null, LockWait? wait = null)
    {
        var r = new CheckReport { Path = path };
        if (!File.Exists(path))
        {
            r.Add(CheckSeverity.CheckFailed, Directory.Exists(path) ? "is a directory, not an image" : "image not found");
            return r;
        }
        bool writable = repair != RepairMode.None;
        FileDevice meta;
        try
        {
            meta = FileDevice.Open(path, readOnly: !writable);
        }
        catch (FvdException e)
        {
            r.Add(CheckSeverity.CheckFailed, e.Message);
            return r;
        }
        using (meta)
        {
            try
            {
                meta.Lock(exclusive: writable, wait ?? LockWait.Default);
            }
            catch (FvdException e)
            {
                r.Add(CheckSeverity.CheckFailed, e.Message);
                return r;
            }
            try
            {
                CheckOpen(path, meta, repair, r, progress);
            }
            catch (FvdException e)
            {
                r.Add(CheckSeverity.CheckFailed, e.OneLine);
            }
        }
        return r;
    }

    private static void CheckOpen(string path, FileDevice meta, RepairMode repair, CheckReport r, Action<long, long>? progress)
    {
        // 1. Header: decode, then validate every field, of each copy when there are two (HeaderSlots.cs).
        var hb = new byte[(int)Math.Min(meta.Length, HeaderSlots.Count * FvdHeader.Size)];
        meta.Read(0, hb);
        bool HasMagic(int at) => hb.Length >= at + FvdHeader.Magic.Length && hb.AsSpan(at, FvdHeader.Magic.Length).SequenceEqual(FvdHeader.Magic);
        if (!HasMagic(0) && !HasMagic(FvdHeader.Size))
        {
            r.Add(CheckSeverity.CheckFailed, "not an FVD image (bad magic)");
            return;
        }
        HeaderChoice choice;
        try
        {
            if (hb.Length < FvdHeader.Size)
                throw new FvdException(FvdErrorKind.InvalidFormat, $"file too short for an FVD header ({hb.Length} of {FvdHeader.Size} bytes)");
            choice = HeaderSlots.Choose(hb, meta.Length);
        }
        catch (FvdException e) when (e.Kind == FvdErrorKind.UnsupportedFeature)
        {
            r.Add(CheckSeverity.CheckFailed, e.Message);
            return;
        }
        catch (FvdException e)
        {
            r.Add(CheckSeverity.Error, "header: " + e.Message);
            return;
        }
        var h = choice.Header;
        r.VirtualSize = h.VirtualSize;
        r.BlocksTotal = h.BitmapBlocks;
        bool corruptMark = (h.Incompatible & IncompatibleFeatures.Corrupt) != 0;
        bool finished = (h.Flags & HeaderFlags.PrefetchFinished) != 0;

        // 2. Bitmap: bits past the last block must be clear; a finished prefetch means every bit is set.
        var bm = new byte[h.BitmapLength];
        if (h.BitmapLength > 0) meta.Read(h.BitmapOffset, bm);
        if (h.BitmapBlocks % 8 != 0 && bm.Length > 0)
        {
            byte mask = (byte)(0xFF << (int)(h.BitmapBlocks % 8));
            if ((bm[^1] & mask) != 0)
            {
                bool fix = repair == RepairMode.All;
                bm[^1] &= (byte)~mask; // in memory either way, so the rest of the check can go on
                if (fix)
                {
                    meta.Write(h.BitmapOffset + bm.Length - 1, bm.AsSpan(bm.Length - 1));
                    meta.Flush();
                }
                r.Add(CheckSeverity.Error, $"bitmap: bits set past the last block ({h.BitmapBlocks} blocks)", fix);
            }
        }
        // The map over the bits as stored, not trusting the finished flag: that flag is what is checked here.
        var map = LinearMap.FromBytes(h, bm, path, trustFinished: false);
        r.BlocksLocal = map.CountLocal();
        if (finished && h.HasBacking && !map.AllBlocksLocal())
            r.Add(CheckSeverity.Error, $"header says prefetch finished, but {h.BitmapBlocks - r.BlocksLocal} of {h.BitmapBlocks} blocks are still in the backing");

        // 3. Data: inline area or separate data file, at least as long as the disk.
        if (h.InlineData)
        {
            long need = h.DataOffset + h.VirtualSize;
            if (meta.Length < need)
            {
                bool fix = repair != RepairMode.None;
                if (fix)
                {
                    meta.SetLength(need);
                    meta.Flush();
                }
                r.Add(CheckSeverity.Repairable, $"inline data area is truncated: file is {meta.Length} bytes, needs {need}", fix);
            }
        }
        else
        {
            string dataPath = FvdImage.ResolveRelative(path, h.DataFile);
            var kind = FileKinds.Of(dataPath);
            if (kind == FileKind.Missing) r.Add(CheckSeverity.Error, $"data file {dataPath} not found");
            else if (kind != FileKind.Regular) r.Add(CheckSeverity.Error, $"data file {dataPath} is a {kind.ToString().ToLowerInvariant()}, not a regular file");
            else
            {
                long len = new FileInfo(dataPath).Length;
                if (len < h.VirtualSize)
                {
                    bool fix = repair != RepairMode.None;
                    if (fix)
                    {
                        using var data = FileDevice.Open(dataPath, readOnly: false);
                        data.SetLength(h.VirtualSize);
                        data.Flush();
                    }
                    r.Add(CheckSeverity.Repairable, $"data file {dataPath} is {len} bytes, shorter than the {h.VirtualSize}-byte disk", fix);
                }
                else if (len > h.VirtualSize)
                    r.Add(CheckSeverity.Info, $"data file {dataPath} is {len} bytes; the {len - h.VirtualSize} bytes past the disk are unused");
                if (h.HasBacking && !finished) ScanLeakedData(dataPath, h, map, repair, r, progress);
            }
        }

        // 4. Backing: needed until prefetch has finished; it must still be as long as when the image was made.
        if (h.HasBacking)
        {
            string bpath = FvdImage.ResolveRelative(path, h.BackingPath);
            var kind = FileKinds.Of(bpath);
            if (finished)
                r.Add(CheckSeverity.Info, $"prefetch finished: backing {bpath} is no longer needed");
            else if (kind == FileKind.Missing)
                r.Add(CheckSeverity.CheckFailed, $"backing file {bpath} not found");
            else if (kind is not (FileKind.Regular or FileKind.BlockDevice))
                r.Add(CheckSeverity.Error, $"backing {bpath} is a {kind.ToString().ToLowerInvariant()}, not a regular file");
            else
            {
                try
                {
                    // A qcow2 or fvd backing is measured by its virtual size, not its file size.
                    using var b = h.BackingFormat != "raw" ? FvdImage.OpenBacking(bpath, h.BackingFormat, new FvdOpenOptions { NoLock = true })
                        : FileDevice.Open(bpath, readOnly: true);
                    if (b.Length < h.BackingSize)
                        r.Add(CheckSeverity.Error, $"backing file {bpath} is {b.Length} bytes, smaller than the {h.BackingSize} bytes the image was created over");
                }
                catch (FvdException e)
                {
                    r.Add(CheckSeverity.Error, $"backing {bpath}: {e.Message}");
                }
            }
        }

        // 5. Flags: the corrupt mark may be cleared once nothing else is wrong; an unclean close is repaired
        // by marking the image clean (the on-disk bitmap is never ahead of durable data, DESIGN.md 3).
        bool clearCorrupt = false;
        if (corruptMark)
        {
            clearCorrupt = repair == RepairMode.All && r.Errors == 0 && !r.CheckFailed;
            r.Add(CheckSeverity.Error, "image is marked corrupt", clearCorrupt);
        }
        bool setClean = false;
        if ((h.Flags & HeaderFlags.CleanShutdown) == 0)
        {
            setClean = repair != RepairMode.None && r.Errors == 0 && !r.CheckFailed;
            r.Add(CheckSeverity.Repairable, "image was not closed cleanly (clean flag clear)", setClean);
        }
        // A bad second copy loses nothing while the current one is good: the header write below goes to its
        // slot anyway, or the current copy is copied over it.
        bool fixCopy = choice.OtherProblem is not null && repair != RepairMode.None;
        if (choice.OtherProblem is not null) r.Add(CheckSeverity.Repairable, "header: " + choice.OtherProblem, fixCopy);
        if (fixCopy && !setClean && !clearCorrupt)
        {
            meta.Write(HeaderSlots.Offset(1 - choice.Slot), hb.AsSpan((int)HeaderSlots.Offset(choice.Slot), FvdHeader.Size));
            meta.Flush();
        }
        if (setClean || clearCorrupt)
        {
            var nh = h with
            {
                Flags = setClean ? h.Flags | HeaderFlags.CleanShutdown : h.Flags,
                Incompatible = clearCorrupt ? h.Incompatible & ~IncompatibleFeatures.Corrupt : h.Incompatible,
            };
            if (!h.InlineData)
            {
                // Data first: whatever reached the data file before the crash is made durable before the
                // header says the image is clean.
                using var data = FileDevice.Open(FvdImage.ResolveRelative(path, h.DataFile), readOnly: false);
                data.Flush();
            }
            meta.Flush();
            var (next, slot) = HeaderSlots.Prepare(h, choice.Slot, nh);
            meta.Write(HeaderSlots.Offset(slot), next.ToBytes());
            meta.Flush();
        }
    }

    /// <summary>Leaks (see Leaks.cs); repair punches them out while the image is locked exclusively.</summary>
    private static void ScanLeakedData(string dataPath, FvdHeader h, LinearMap map, RepairMode repair, CheckReport r, Action<long, long>? progress)
    {
        using var data = FileDevice.Open(dataPath, readOnly: repair == RepairMode.None);
        data.AssumeLength(Math.Max(data.Length, h.VirtualSize));
        var (leaked, leakedBytes) = Leaks.Find(data, map, progress);
        if (leakedBytes == 0) return;
        bool fix = repair != RepairMode.None;
        if (fix)
        {
            Leaks.Reclaim(data, leaked);
        }
        r.Add(CheckSeverity.Repairable,
            $"{leakedBytes} bytes allocated in the data file for {leaked.Count} ranges of blocks that still read from the backing (written but not flushed before a crash)", fix);
    }
}
