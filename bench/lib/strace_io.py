#!/usr/bin/env python3
"""Counts the I/O a daemon issued to image files in an `strace -f -y -s 0` log and measures locality.
usage: strace_io.py LOG GUEST_WRITES OUT.json FILE [FILE...]
A FILE written as remote:PATH (the template: on another host in the paper's setup) is counted but left out of
the seek sequence.
Reads/writes/flushes are counted only for FILE paths (fds shown by -y). Seek distance: for consecutive
accesses (in log order) to the same file, |offset delta| / that file's size; a move to another file is
counted apart (switches)."""
import json, os, re, sys

log, guest_writes, out, args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
remote = {a[len("remote:"):] for a in args if a.startswith("remote:")}
files = [a[len("remote:"):] if a.startswith("remote:") else a for a in args]
real = {os.path.realpath(f): f for f in files}
# Two normalizations: by each file's own size (the FVD data file is as long as the virtual disk, a qcow2 only as
# long as what it has allocated), and by NORM_BYTES (the virtual disk size) for every file alike, as the
# paper's fixed partition does.
norm = int(os.environ.get("NORM_BYTES", "0"))
fsizes = {f: max(os.path.getsize(f), 1) for f in files}
sizes = {f: norm or fsizes[f] for f in files}
start = re.compile(r"^(?:\[pid\s+)?\d*\]?\s*(\w+)\((\d+)<([^>]*)>(.*)$")
READS = {"pread64", "preadv", "preadv2", "read"}
WRITES = {"pwrite64", "pwritev", "pwritev2", "write"}
FLUSHES = {"fsync", "fdatasync", "sync_file_range"}
counts = {"reads": 0, "writes": 0, "flushes": 0}
per_file = {f: {"reads": 0, "writes": 0, "flushes": 0, "bytes_read": 0, "bytes_written": 0} for f in files}
seq = []  # (file, offset)
for line in open(log, errors="replace"):
    m = start.match(line.strip())
    if not m:
        continue
    call, _fd, path, rest = m.groups()
    f = real.get(os.path.realpath(path)) if path else None
    if f is None:
        continue
    rest = rest.split(" <unfinished")[0]
    rest = rest.rsplit(") =", 1)[0] if ") =" in rest else rest
    nums = re.findall(r"(?<![\w=])(\d+)(?![\w])", rest)
    if call in FLUSHES:
        counts["flushes"] += 1; per_file[f]["flushes"] += 1
        continue
    kind = "reads" if call in READS else "writes" if call in WRITES else None
    if kind is None:
        continue
    counts[kind] += 1; per_file[f][kind] += 1
    off = None; length = 0
    if call in ("pread64", "pwrite64") and len(nums) >= 2:
        off, length = int(nums[-1]), int(nums[-2])
    elif call in ("preadv", "pwritev") and nums:
        off = int(nums[-1]); length = sum(int(x) for x in re.findall(r"iov_len=(\d+)", rest))
    elif call in ("preadv2", "pwritev2") and len(nums) >= 2:
        off = int(nums[-2]); length = sum(int(x) for x in re.findall(r"iov_len=(\d+)", rest))
    per_file[f]["bytes_read" if kind == "reads" else "bytes_written"] += length
    if off is not None and f not in remote:
        seq.append((f, off))
dists, fdists, switches = [], [], 0
for (f1, o1), (f2, o2) in zip(seq, seq[1:]):
    if f1 != f2:
        switches += 1
    else:
        dists.append(min(abs(o2 - o1) / sizes[f1], 1.0))
        fdists.append(min(abs(o2 - o1) / fsizes[f1], 1.0))
bins = [0] * 20
for d in fdists:
    bins[min(int(d * 20), 19)] += 1
k = 1000.0 / guest_writes
json.dump({
    "guest_first_writes": guest_writes,
    "per_1000": {c: v * k for c, v in counts.items()} | {"total": sum(counts.values()) * k},
    "per_file": {os.path.basename(f): v | {"size": os.path.getsize(f)} for f, v in per_file.items()},
    "normalized_by": norm or "file size",
    "remote": [os.path.basename(f) for f in remote], "accesses": len(seq), "same_file_pairs": len(dists), "file_switches": switches,
    "mean_seek": (sum(dists) / len(dists)) if dists else 0.0,
    "mean_seek_switch_as_1": (sum(dists) + switches) / max(len(dists) + switches, 1),
    "mean_seek_by_file_size": (sum(fdists) / len(fdists)) if fdists else 0.0,
    "mean_seek_by_file_size_switch_as_1": (sum(fdists) + switches) / max(len(fdists) + switches, 1),
    "hist_bins": bins,
}, open(out, "w"), indent=1)
