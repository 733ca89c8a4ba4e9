#!/usr/bin/env python3
"""Runs PostMark with unbuffered stdout and times its phases from its progress text
("Creating files...Done", "Performing transactions....Done"): PostMark itself reports whole seconds only.
usage: pm_time.py CONFIG OUT.json"""
import json, os, re, subprocess, sys, time

cfg, out = sys.argv[1], sys.argv[2]
text = open(cfg).read()
nfiles = int(re.search(r"set number (\d+)", text).group(1))
ntrans = int(re.search(r"set transactions (\d+)", text).group(1))
p = subprocess.Popen(["stdbuf", "-o0", "postmark", cfg], stdout=subprocess.PIPE)
buf, marks = b"", {}
while True:
    chunk = os.read(p.stdout.fileno(), 4096)
    now = time.monotonic()
    if not chunk:
        break
    buf += chunk
    for key, pat in (("c0", b"Creating files..."), ("t0", b"Performing transactions"), ("d0", b"Deleting files")):
        if key not in marks and pat in buf:
            marks[key] = now
    if "c0" in marks and "c1" not in marks and b"Done" in buf[buf.index(b"Creating files..."):]:
        marks["c1"] = now
    if "t0" in marks and "t1" not in marks and b"Done" in buf[buf.index(b"Performing transactions"):]:
        marks["t1"] = now
rc = p.wait()
sys.stdout.write(buf.decode(errors="replace"))
if rc != 0 or not all(k in marks for k in ("c0", "c1", "t0", "t1")):
    sys.exit(f"postmark failed (rc={rc}, marks={sorted(marks)})")
create_s, trans_s = marks["c1"] - marks["c0"], marks["t1"] - marks["t0"]
json.dump({"files": nfiles, "transactions": ntrans, "create_s": create_s, "trans_s": trans_s,
           "create_files_per_s": nfiles / create_s, "transactions_per_s": ntrans / trans_s}, open(out, "w"), indent=1)
