#!/usr/bin/env python3
"""Turns bench/results/raw/*.json into results.json, results.md and plots (gnuplot, SVG + PNG).
usage: report.py RAWDIR OUTDIR"""
import glob, json, os, shutil, subprocess, sys

raw, out = sys.argv[1], sys.argv[2]
meta = json.load(open(os.path.join(raw, "meta.json")))
VIEWS = ["host", "qsd-raw", "qsd-raw-dio", "qsd-qcow2", "nbd-qcow2", "xmount", "fvd", "fvd-nb", "fvd-nb-pt"]
LABEL = {"host": "(a) host O_DIRECT", "qsd-raw": "(b) qsd raw", "qsd-raw-dio": "(b') qsd raw cache.direct",
         "qsd-qcow2": "(c) qsd qcow2", "nbd-qcow2": "(c') qemu-nbd+nbdfuse qcow2", "xmount": "(x) xmount",
         "fvd": "(d) FVD", "fvd-nb": "(e) FVD no backing", "fvd-nb-pt": "(e') FVD no backing, passthrough"}
PHASES = ["first", "second", "read"]
COLOR = {"host": "#7f7f7f", "qsd-raw": "#1f77b4", "qsd-raw-dio": "#aec7e8", "qsd-qcow2": "#d62728", "nbd-qcow2": "#ff9896",
         "xmount": "#9467bd", "fvd": "#2ca02c", "fvd-nb": "#98df8a", "fvd-nb-pt": "#17becf"}


def plot_cmd(datafile, views):
    return "plot " + ", ".join(f"'{datafile}' using {i + 2}{':xtic(1)' if i == 0 else ''} title columnheader({i + 2}) lc rgb '{COLOR[v]}'"
                               for i, v in enumerate(views))


def load(p):
    try:
        text = open(p, errors="replace").read()
        return json.loads(text[text.find("{"):])  # fio may print a warning line before its JSON
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- RandIO
randio = {}  # (region, bs, mode, phase) -> view -> {"mbs", "iops", "p50_us", "reps"}: medians over reps
samples = {}
for p in glob.glob(os.path.join(raw, "randio.*.json")):
    parts = os.path.basename(p).split(".")
    view, region, bs, mode, phase = parts[1:6]
    j = load(p)
    if not j:
        continue
    side = j["jobs"][0]["read" if phase == "read" else "write"]
    samples.setdefault((region, bs, mode, phase), {}).setdefault(view, []).append(
        (side["bw_bytes"] / 1e6, side["iops"], side["clat_ns"]["percentile"]["50.000000"] / 1000))


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


for k, views in samples.items():
    for v, reps in views.items():
        randio.setdefault(k, {})[v] = {"mbs": median([r[0] for r in reps]), "iops": median([r[1] for r in reps]),
                                       "p50_us": median([r[2] for r in reps]), "mbs_reps": [r[0] for r in reps]}


def order(keys):
    bsk = {"4k": 0, "64k": 1}
    mk = {"qd1": 0, "qd8": 1, "4thr": 2}
    return sorted(keys, key=lambda k: (k[0] != "backed", bsk.get(k[1], 9), mk.get(k[2], 9), PHASES.index(k[3])))


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(x, d=1):
    return "–" if x is None else f"{x:.{d}f}"


postmark = {}
for v in VIEWS:
    reps = [j for j in (load(p) for p in sorted(glob.glob(os.path.join(raw, f"postmark.{v}.*.json")))) if j]
    if reps:
        postmark[v] = {"create_files_per_s": median([r["create_files_per_s"] for r in reps]),
                       "transactions_per_s": median([r["transactions_per_s"] for r in reps]),
                       "create_reps": [round(r["create_files_per_s"], 1) for r in reps],
                       "trans_reps": [round(r["transactions_per_s"], 1) for r in reps]}
trace = {}
for p in glob.glob(os.path.join(raw, "trace.*.json")):
    parts = os.path.basename(p).split(".")
    if len(parts) == 4:
        trace.setdefault(parts[2], {})[parts[1]] = load(p)
foot = load(os.path.join(raw, "footprint.json"))
elapsed = load(os.path.join(raw, "elapsed.json"))


def rv(region, bs, mode, phase, view):
    return randio.get((region, bs, mode, phase), {}).get(view, {}).get("mbs")


def lat_ratio(region, bs, mode, phase, a, b):
    """b's median latency / a's: how much faster a is by median request latency (robust to load spikes)."""
    la = randio.get((region, bs, mode, phase), {}).get(a, {}).get("p50_us")
    lb = randio.get((region, bs, mode, phase), {}).get(b, {}).get("p50_us")
    return lb / la if la and lb else None


# ---------------------------------------------------------------- concurrent-write verify, locality, counters
verify = {}  # view -> {"mode": errors or None}
for p in glob.glob(os.path.join(raw, "verify.*.json")):
    _, view, mode, _ = os.path.basename(p).split(".")
    j = load(p)
    errs = None
    if j and j.get("jobs"):
        errs = sum(int(jb.get("error", 0) != 0) for jb in j["jobs"])
    err_text = ""
    try:
        err_text = open(p[:-5] + ".err", errors="replace").read()
    except OSError:
        pass
    bad = err_text.count("verify:") + err_text.count("bad header") + err_text.count("bad magic")
    verify.setdefault(view, {})[mode] = {"failed": bool(errs) or bad > 0 or j is None, "messages": bad}
failed_verify = {v for v, m in verify.items() if any(x["failed"] for x in m.values())}
locality = {}
for p in glob.glob(os.path.join(raw, "loc.*.read.json")):
    view = os.path.basename(p).split(".")[1]
    j = load(p)
    tr = load(os.path.join(raw, f"loc.{view}.trace.json"))
    w = load(os.path.join(raw, f"loc.{view}.write.json"))
    if j:
        locality[view] = {"seq_read_mbs": j["jobs"][0]["read"]["bw_bytes"] / 1e6,
                          "first_write_mbs": w and w["jobs"][0]["write"]["bw_bytes"] / 1e6,
                          "data_reads": tr and tr["per_1000"]["reads"] * tr["guest_first_writes"] / 1000,
                          # no offsets in the log (lseek + read, as xmount's stdio does): no seek distance
                          "mean_seek_by_file_size": tr and (tr["mean_seek_by_file_size"] if tr["accesses"] else None)}
counters = []
try:
    counters = [json.loads(line) for line in open(os.path.join(raw, "counters.jsonl"))]
except OSError:
    pass
overhead = {}
for v in ("fvd-nb",):
    b = next((c for c in reversed(counters) if c["view"] == v and c["at"] == "before"), None)
    a = next((c for c in reversed(counters) if c["view"] == v and c["at"] == "after"), None)
    if a and b and a.get("requests"):
        d = {}
        for cls in ("read", "write"):
            n = a["requests"][cls]["count"] - b["requests"][cls]["count"]
            ns = a["requests"][cls]["total_ns"] - b["requests"][cls]["total_ns"]
            d[cls] = {"count": n, "mean_ns": ns / n if n else None, "median_ns_whole_mount": a["requests"][cls]["median_ns"]}
        overhead[v] = {"fuse_fds": a.get("fuse_fds"), **d}

# ---------------------------------------------------------------- targets (same-run ratios)
targets = []


def target(name, value, goal, cmp, note="", by_latency=None):
    met = None if value is None else (value >= goal if cmp == ">=" else value <= goal)
    targets.append({"target": name, "value": value, "goal": f"{cmp} {goal}", "met": met, "note": note,
                    "by_median_latency": by_latency})


def rtarget(name, region, bs, mode, phase, a, b, goal, note=""):
    target(name, ratio(rv(region, bs, mode, phase, a), rv(region, bs, mode, phase, b)), goal, ">=", note,
           lat_ratio(region, bs, mode, phase, a, b))


rtarget("4K first writes into the template region, QD1: FVD / xmount", "backed", "4k", "qd1", "first", "fvd", "xmount", 1.5)
best_q = max(("qsd-qcow2", "nbd-qcow2"), key=lambda v: rv("backed", "4k", "qd1", "first", v) or 0)
rtarget(f"4K first writes into the template region, QD1: FVD / best qcow2 peer ({best_q})", "backed", "4k", "qd1", "first", "fvd", best_q, 2.5)
rtarget("No backing, 4K QD1 writes: FVD-nb (passthrough=off) / qsd raw (default host I/O)", "backed", "4k", "qd1", "first", "fvd-nb", "qsd-raw", 1.5)
rtarget("No backing, 4K QD1 reads: FVD-nb (passthrough=off) / qsd raw (default host I/O)", "backed", "4k", "qd1", "read", "fvd-nb", "qsd-raw", 1.5)
rtarget("No backing, 4K QD1 writes: FVD-nb (default, passthrough) / qsd raw cache.direct=on", "backed", "4k", "qd1", "first", "fvd-nb-pt", "qsd-raw-dio", 1.5)
rtarget("No backing, 4K QD1 reads: FVD-nb (default, passthrough) / qsd raw cache.direct=on", "backed", "4k", "qd1", "read", "fvd-nb-pt", "qsd-raw-dio", 1.5)
rtarget("Passthrough view 4K QD1 reads / host file", "backed", "4k", "qd1", "read", "fvd-nb-pt", "host", 0.9)
rtarget("Passthrough view 4K QD1 writes / host file", "backed", "4k", "qd1", "second", "fvd-nb-pt", "host", 0.9)
pm = lambda v, k: (postmark.get(v) or {}).get(k)
target("PostMark (ext4 -o sync, barriers on) file creation: FVD / qsd-qcow2", ratio(pm("fvd", "create_files_per_s"), pm("qsd-qcow2", "create_files_per_s")), 2.0, ">=")
target("PostMark (ext4 -o sync, barriers on) transactions: FVD / qsd-qcow2", ratio(pm("fvd", "transactions_per_s"), pm("qsd-qcow2", "transactions_per_s")), 1.5, ">=")
lq = max((v for v in ("qsd-qcow2", "nbd-qcow2") if v in locality), key=lambda v: locality[v]["seq_read_mbs"], default=None)
if "fvd" in locality and lq:
    target(f"Sequential read after random first writes, caches dropped: FVD / best qcow2 peer ({lq})",
           ratio(locality["fvd"]["seq_read_mbs"], locality[lq]["seq_read_mbs"]), 1.0, ">=", "locality: FVD keeps address order")
tb = trace.get("backed", {})
tq, tf = tb.get("qsd-qcow2"), tb.get("fvd")
target("I/O count per first write (backed, 4K QD1): FVD / qsd-qcow2", ratio(tf and tf["per_1000"]["total"], tq and tq["per_1000"]["total"]), 0.6, "<=")
tpm = trace.get("postmark", {})
pq, pf = tpm.get("qsd-qcow2"), tpm.get("fvd")
target("I/O count during PostMark, per file created: FVD / qsd-qcow2", ratio(pf and pf["per_1000"]["total"], pq and pq["per_1000"]["total"]), 0.6, "<=")
if foot:
    target("1 TiB: FVD metadata file (MiB)", foot["fvd_meta_bytes"] / 2**20, 4.0, "<=", f"{foot['fvd_meta_bytes']} bytes: 4 KiB header + bitmap ({foot.get('fvd_info', '')})")
    target("1 TiB: FVD daemon RSS after 4000 random 4K I/Os (MiB)", max(foot["fvd_rss_after_io"]["rss_kib"], foot["fvd_rss_after_io"]["hwm_kib"]) / 1024, 64.0, "<=",
           "peak (VmHWM)")

# ---------------------------------------------------------------- JSON
result = {"meta": meta, "elapsed": elapsed,
          "randio": [{"region": k[0], "bs": k[1], "mode": k[2], "phase": k[3], "views": randio[k]} for k in order(randio)],
          "postmark": postmark, "trace": trace, "footprint": foot, "targets": targets,
          "verify": verify, "locality": locality, "fvd_overhead": overhead}
os.makedirs(out, exist_ok=True)
json.dump(result, open(os.path.join(out, "results.json"), "w"), indent=1)

# ---------------------------------------------------------------- Markdown
L = []
L.append(f"# FvdFuse benchmark results ({meta['mode']} mode)\n")
L.append(f"{meta['date']}, commit {meta['git']}, kernel {meta['kernel']}, {meta['cpus']} CPUs; peers: {meta['qsd_version']}; "
         f"{meta.get('qemu_nbd_version', '')}; {meta.get('nbdfuse_version', '')}; {meta.get('xmount_version', '')}; {meta['fio_version']}. "
         f"Template {meta['template_bytes'] >> 20} MiB of random data, virtual disks {meta['virtual_bytes'] >> 20} MiB. "
         f"FVD served by `{meta['fvd_server']}`; qsd host I/O cache.direct={meta['qsd_cache_direct']} (the FVD driver uses the page cache too). "
         f"Other work ran on this machine: compare ratios within this run only.\n")
L.append("Views: (a) host file, O_DIRECT; (b) qemu-storage-daemon FUSE export of a raw copy of the template, (b') the same with cache.direct=on; "
         "(c) same daemon, qcow2 over the template; (c') qemu-nbd serving a qcow2 over the template, shown by nbdfuse; (x) xmount: raw template + write cache file "
         "(its view is only as large as the template: no pastend rows); (d) FVD over the template; (e) FVD without backing (passthrough=off), (e') the same with fvdmount's defaults (passthrough). "
         "fio with direct=1 on every view; QD1 = psync, QD8 = libaio iodepth 8, 4thr = 4 psync jobs on disjoint quarters. "
         "`backed` = inside the template, `pastend` = past its end. first/second = first and second write of every block of a slice, read = then read it.\n")
L.append("**(a) is not a ceiling here**: the FVD driver has no O_DIRECT mode, so FVD and (for fairness) qsd write into the host page cache, while (a) waits for the virtual disk.\n")
L.append("**Caveat**: concurrent-write numbers (QD8, 4thr) of a view that failed the crc32c verify below are marked †: the speed of a wrong answer.\n")
L.append("## Targets\n")
L.append("RandIO ratios are of fio throughput (median over reps); the last column gives the same ratio by median request latency, which load from other processes disturbs less.\n")
L.append("| target | value | goal | met | by median latency | note |")
L.append("|---|---|---|---|---|---|")
for t in targets:
    L.append(f"| {t['target']} | {fmt(t['value'], 3 if t['value'] is not None and t['value'] < 10 else 1)} | {t['goal']} | "
             f"{'yes' if t['met'] else 'no' if t['met'] is not None else 'n/a'} | {fmt(t['by_median_latency'], 2) if t['by_median_latency'] else ''} | {t['note']} |")
L.append("\n## RandIO: MB/s (median request latency in µs); ratios of MB/s\n")
L.append("| region | bs | mode | phase | " + " | ".join(LABEL[v] for v in VIEWS) + " | (d)/(c) | (e)/(b) | (d)/(a) |")
L.append("|" + "---|" * (4 + len(VIEWS) + 3))
for k in order(randio):
    row = randio[k]
    cells = []
    for v in VIEWS:
        x = row.get(v, {}).get("mbs")
        lat = row.get(v, {}).get("p50_us")
        dag = "†" if v in failed_verify and k[2] != "qd1" and k[3] != "read" else ""
        cells.append(fmt(x) + dag + (f" ({lat:.0f})" if lat else ""))
    g = lambda v: row.get(v, {}).get("mbs")
    L.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | " + " | ".join(cells) +
             f" | {fmt(ratio(g('fvd'), g('qsd-qcow2')), 2)} | {fmt(ratio(g('fvd-nb'), g('qsd-raw')), 2)} | {fmt(ratio(g('fvd'), g('host')), 2)} |")
if verify:
    L.append("\n## Concurrent writes: fio 64K randwrite with crc32c verify (QD16; 2 jobs x QD8)\n")
    L.append("A view that fails returns another request's data; its concurrent-write numbers above are marked †.\n")
    L.append("| view | QD16 | 2 x QD8 |")
    L.append("|---|---|---|")
    for v in VIEWS:
        if v in verify:
            c = lambda m: "–" if m not in verify[v] else ("**FAILED**" + (f" ({verify[v][m]['messages']} errors)" if verify[v][m]["messages"] else "")) if verify[v][m]["failed"] else "ok"
            L.append(f"| {LABEL[v]} | {c('qd16')} | {c('2x8')} |")
if locality:
    L.append(f"\n## Locality: sequential read after random 4K first writes ({meta.get('loc_bytes', 0) >> 20} MiB of the template region, caches dropped)\n")
    L.append("fio: every 4 KiB block of the region written once in random order (QD1, then fsync); `echo 3 > drop_caches`; one sequential 1 MiB O_DIRECT read "
             "of the region. Seek distance: mean |offset delta| / file size between consecutive reads of the same image file by the daemon (strace; the template is left out).\n")
    L.append("| view | first writes MB/s | sequential read MB/s | daemon reads of image files | mean seek / file size |")
    L.append("|---|---|---|---|---|")
    for v in VIEWS:
        j = locality.get(v)
        if j:
            L.append(f"| {LABEL[v]} | {fmt(j['first_write_mbs'])} | {fmt(j['seq_read_mbs'])} | {fmt(j['data_reads'], 0) if j['data_reads'] is not None else '–'} | "
                     f"{fmt(j['mean_seek_by_file_size'], 4) if j['mean_seek_by_file_size'] is not None else '–'} |")
if overhead:
    L.append("\n## fvdmount per-request overhead (status-file counters)\n")
    L.append("Time from reading a request off /dev/fuse to writing its reply, during the backed 4K QD1 slice (first, second, read); "
             "the median is of the whole mount so far (log-scale histogram, 4 buckets per octave).\n")
    L.append("| view | /dev/fuse fds | WRITE count | WRITE mean µs | WRITE median µs | READ count | READ mean µs | READ median µs |")
    L.append("|---|---|---|---|---|---|---|---|")
    us = lambda x: "–" if x is None else f"{x / 1000:.1f}"
    for v, o in overhead.items():
        L.append(f"| {LABEL[v]} | {o['fuse_fds']} | {o['write']['count']} | {us(o['write']['mean_ns'])} | {us(o['write']['median_ns_whole_mount'])} | "
                 f"{o['read']['count']} | {us(o['read']['mean_ns'])} | {us(o['read']['median_ns_whole_mount'])} |")
if any(postmark.values()):
    L.append("\n## PostMark (ext4 in a loop device over each view)\n")
    L.append(f"{meta['pm_files']} files of 10–50 KB, {meta['pm_transactions']} transactions, ext4 mounted `-o {meta['pm_mount_opts']}`; "
             "loop devices over FUSE views are buffered (qsd corrupts direct ones), over the host file direct. Phase times from PostMark's progress output.\n")
    L.append(f"Medians of {meta.get('pm_reps', 1)} rep(s), each on a fresh partition; the reps are listed to show the spread.\n")
    L.append("| view | creation files/s | transactions/s | creation vs (c) | creation vs (a) | tx vs (c) | creation reps | tx reps |")
    L.append("|---|---|---|---|---|---|---|---|")
    for v in VIEWS:
        j = postmark.get(v)
        if not j:
            continue
        L.append(f"| {LABEL[v]} | {j['create_files_per_s']:.0f} | {j['transactions_per_s']:.0f} | "
                 f"{fmt(ratio(j['create_files_per_s'], pm('qsd-qcow2', 'create_files_per_s')), 2)} | "
                 f"{fmt(ratio(j['create_files_per_s'], pm('host', 'create_files_per_s')), 2)} | "
                 f"{fmt(ratio(j['transactions_per_s'], pm('qsd-qcow2', 'transactions_per_s')), 2)} | "
                 f"{', '.join(f'{x:.0f}' for x in j['create_reps'])} | {', '.join(f'{x:.0f}' for x in j['trans_reps'])} |")
for region, rows in sorted(trace.items()):
    if region == "postmark":
        L.append(f"\n## I/O reaching the image files during PostMark per 1,000 files created (strace; {meta.get('pm_trace_files', '?')} files)\n")
    else:
        L.append(f"\n## I/O reaching the image files per 1,000 guest 4 KiB first writes at QD1 ({region} region; strace)\n")
    L.append("| view | reads | writes | flushes | total | seek / file size | seek / virtual size | file switches / access | seek / file size, switch = 1 | seek / virtual, switch = 1 |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for v in VIEWS:
        j = rows.get(v)
        if not j:
            continue
        p = j["per_1000"]
        L.append(f"| {LABEL[v]} | {p['reads']:.0f} | {p['writes']:.0f} | {p['flushes']:.0f} | {p['total']:.0f} | {j['mean_seek_by_file_size']:.4f} | {j['mean_seek']:.4f} | "
                 f"{j['file_switches'] / max(j['accesses'] - 1, 1):.2f} | {j['mean_seek_by_file_size_switch_as_1']:.4f} | {j['mean_seek_switch_as_1']:.4f} |")
    L.append("\nPer file: " + "; ".join(f"{LABEL[v]}: " + ", ".join(f"{n} r{d['reads']}/w{d['writes']}/f{d['flushes']}" for n, d in rows[v]["per_file"].items())
                                       for v in VIEWS if rows.get(v)))
if foot:
    mib = lambda b: b / 2**20
    L.append("\n## Footprint: 1 TiB virtual disk over a 1 TiB sparse template\n")
    L.append(f"FVD: {foot['fvd_info']}; created in {foot['fvd_create_s']:.2f} s.\n")
    L.append("| | FVD | qcow2 (qsd) |")
    L.append("|---|---|---|")
    L.append(f"| metadata file after create (bytes) | {foot['fvd_meta_bytes']} ({mib(foot['fvd_meta_bytes']):.3f} MiB) | {foot['qcow2_created_bytes']} ({mib(foot['qcow2_created_bytes']):.3f} MiB) |")
    L.append(f"| after 4000 random 4K I/Os (2000 writes): allocated MiB | meta {mib(foot['fvd_meta_alloc_bytes']):.2f} + data {mib(foot['fvd_data_alloc_bytes_after_io']):.2f} | {mib(foot['qcow2_alloc_bytes_after_io']):.2f} (data + metadata) |")
    L.append(f"| daemon RSS idle (MiB) | {foot['fvd_rss_idle']['rss_kib'] / 1024:.1f} | {foot['qsd_rss_idle']['rss_kib'] / 1024:.1f} |")
    L.append(f"| daemon RSS after 4000 random 4K I/Os / peak (MiB) | {foot['fvd_rss_after_io']['rss_kib'] / 1024:.1f} / {foot['fvd_rss_after_io']['hwm_kib'] / 1024:.1f} | "
             f"{foot['qsd_rss_after_io']['rss_kib'] / 1024:.1f} / {foot['qsd_rss_after_io']['hwm_kib'] / 1024:.1f} |")
if elapsed:
    L.append(f"\nTotal run time: {elapsed['elapsed_s']} s.")
L.append("\nPlots: `randio.svg` (`.png`), `seek-hist.svg` (`.png`). Raw fio/strace/PostMark output in `raw/`.")
open(os.path.join(out, "results.md"), "w").write("\n".join(L) + "\n")

# ---------------------------------------------------------------- plots
if shutil.which("gnuplot") and randio:
    keys = [k for k in order(randio) if k[2] == "qd1"] or order(randio)
    with open(os.path.join(out, "randio.dat"), "w") as f:
        f.write("label " + " ".join(f'"{LABEL[v]}"' for v in VIEWS) + "\n")
        for k in keys:
            f.write(f'"{k[0]} {k[1]} {k[3]}" ' + " ".join(fmt(randio[k].get(v, {}).get("mbs"), 2).replace("–", "0") for v in VIEWS) + "\n")
    for term, ext in (("svg size 1200,500 dynamic", "svg"), ("pngcairo size 1200,500", "png")):
        gp = f"""set terminal {term}
set output '{os.path.join(out, 'randio.' + ext)}'
set title 'RandIO, QD1 (MB/s, higher is better)'
set termoption noenhanced
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set key top left
set xtics rotate by -35
set ylabel 'MB/s'
set logscale y
set grid ytics
{plot_cmd(os.path.join(out, 'randio.dat'), VIEWS)}
"""
        r = subprocess.run(["gnuplot"], input=gp, text=True, capture_output=True)
        if r.returncode and ext == "png":  # no cairo: fall back to the plain png terminal
            subprocess.run(["gnuplot"], input=gp.replace("pngcairo", "png"), text=True)
hist_src = "postmark" if trace.get("postmark") else "backed"
if shutil.which("gnuplot") and trace.get(hist_src):
    rows = trace[hist_src]
    vs = [v for v in VIEWS if rows.get(v)]
    with open(os.path.join(out, "seek-hist.dat"), "w") as f:
        f.write("bin " + " ".join(f'"{LABEL[v]}"' for v in vs) + "\n")
        for i in range(20):
            f.write(f'"{i / 20:.2f}" ' + " ".join(str(rows[v]["hist_bins"][i]) for v in vs) + "\n")
    for term, ext in (("svg size 1000,450 dynamic", "svg"), ("pngcairo size 1000,450", "png")):
        gp = f"""set terminal {term}
set output '{os.path.join(out, 'seek-hist.' + ext)}'
set title 'Seek distance (offset delta / file size) between consecutive accesses to the same image file ({"PostMark" if hist_src == "postmark" else "1,000 4K first writes, backed region"})'
set termoption noenhanced
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set xlabel 'normalized seek distance (bin start)'
set ylabel 'count'
set logscale y
set yrange [0.8:*]
set grid ytics
{plot_cmd(os.path.join(out, 'seek-hist.dat'), vs)}
"""
        r = subprocess.run(["gnuplot"], input=gp, text=True, capture_output=True)
        if r.returncode and ext == "png":
            subprocess.run(["gnuplot"], input=gp.replace("pngcairo", "png"), text=True)
print(os.path.join(out, "results.md"))
