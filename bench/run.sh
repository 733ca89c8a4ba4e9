#!/usr/bin/env bash
# FvdFuse benchmarks: RandIO (paper Fig. 5), PostMark (Fig. 6), locality of a sequential read after random first
# writes, I/O count and seek distance (Fig. 7; full mode), concurrent-write verify, 1 TiB footprint. In one run:
#   host        (a) the host file itself, O_DIRECT (the limit)
#   qsd-raw     (b) qemu-storage-daemon --export type=fuse of a raw copy of the template (host I/O: QSD_CACHE_DIRECT)
#   qsd-raw-dio (b') the same with cache.direct=on
#   qsd-qcow2   (c) the same daemon exporting a qcow2 over the template (backing_fmt=raw)
#   nbd-qcow2   (c') qemu-nbd serving that qcow2 over a unix socket, shown as a file by nbdfuse
#   xmount      (x) xmount: the raw template plus a write cache file (its view is only as large as the template)
#   fvd         (d) FVD image over the template, served by fvdmount (FVD_OPTS, default passthrough=off)
#   fvd-nb      (e) FVD image without backing, fvdmount passthrough=off
#   fvd-nb-pt   (e') FVD image without backing, fvdmount defaults (passthrough on)
# Peers: bench/peers.sh installs them (make bench does).
# usage: bench/run.sh [--quick]     (root; needs the apt packages listed in bench/README.md)
# Environment: BENCH_WORK (scratch dir, default /var/tmp/fvd-bench), BENCH_OUT (default bench/results),
#   QSD_CACHE_DIRECT=on|off (qsd host I/O; default off = page cache, like the FVD driver),
#   PM_MOUNT_OPTS (guest ext4 options for PostMark, default sync), KEEP_WORK=1, SKIP=randio,postmark,strace,footprint
set -Eeuo pipefail
{ # the whole script is one compound command, so bash parses it before running: editing it mid-run is safe

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
MODE=full
[[ ${1:-} == --quick ]] && MODE=quick
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n 2,14p "$0"; exit 0; }
[[ $(id -u) == 0 ]] || { echo "bench/run.sh: must run as root (FUSE mounts, loop devices)" >&2; exit 1; }
for t in qemu-storage-daemon qemu-img qemu-nbd nbdfuse xmount fio postmark strace mkfs.ext4 losetup python3 dotnet stdbuf; do
    command -v $t >/dev/null || { echo "bench/run.sh: missing $t (see bench/README.md for apt packages)" >&2; exit 1; }
done

W=${BENCH_WORK:-/var/tmp/fvd-bench}
OUT=${BENCH_OUT:-$HERE/results/$MODE}
RAW=$OUT/raw
QSD_CACHE_DIRECT=${QSD_CACHE_DIRECT:-off}
PM_MOUNT_OPTS=${PM_MOUNT_OPTS:-sync}
SKIP=${SKIP:-}
MiB=$((1 << 20))

if [[ $MODE == quick ]]; then
    T=$((256 * MiB)); V=$((1024 * MiB))
    COMBOS="4k:qd1 64k:qd1 4k:4thr"
    SLICE_4K=$((16 * MiB)); SLICE_64K=$((64 * MiB)); REPS=1
    PM_FILES=400; PM_TRANS=800; PM_REPS=3
    SKIP=${SKIP:-strace}
else
    T=$((1024 * MiB)); V=$((4096 * MiB))
    COMBOS="4k:qd1 64k:qd1 4k:qd8 64k:qd8 4k:4thr 64k:4thr"
    SLICE_4K=$((32 * MiB)); SLICE_64K=$((64 * MiB)); REPS=3
    PM_FILES=4000; PM_TRANS=8000; PM_REPS=3
fi
TRACE_IOS=1000
PM_TRACE_FILES=200; PM_TRACE_TRANS=300
VIEWS="host qsd-raw qsd-raw-dio qsd-qcow2 nbd-qcow2 xmount fvd fvd-nb fvd-nb-pt"
PM_VIEWS="host qsd-qcow2 nbd-qcow2 fvd"   # xmount's view ends at the template: no room for the partition
LOC_BYTES=$((32 * MiB)); LOC_VIEWS="qsd-qcow2 nbd-qcow2 xmount fvd"

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------- cleanup (runs on any exit)
PIDS=()        # daemons we started
FUSE_MNTS=()   # their mountpoints
EXT_MNTS=()    # guest ext4 mounts
LOOPS=()       # loop devices
cleanup() {
    local rc=$?
    set +e
    for m in "${EXT_MNTS[@]}"; do mountpoint -q "$m" && umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; kill -KILL "$p" 2>/dev/null; done
    for m in "${FUSE_MNTS[@]}"; do grep -q " $m fuse" /proc/mounts && umount -l "$m" 2>/dev/null; done
    [[ ${KEEP_WORK:-0} == 1 ]] || rm -rf "$W"
    EXT_MNTS=(); LOOPS=(); PIDS=(); FUSE_MNTS=()
    return $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build the FVD tools
BUILD=$HERE/.build
log "building fvd-img and fvdmount"
# Rebuild only when a source is newer than the tools (a publish costs ~30-60 s on a busy 2-core machine).
if [[ ! -x $BUILD/fvdmount/fvdmount || ! -x $BUILD/fvd-img/fvd-img ]] || [[ -n $(find "$ROOT/src" \
        \( -name '*.cs' -o -name '*.csproj' \) -newer "$BUILD/fvdmount/fvdmount" -not -path '*/obj/*' -not -path '*/bin/*' | head -1) ]]; then
    dotnet publish "$ROOT/src/Fvd.Mount/Fvd.Mount.csproj" -c Release -o "$BUILD/fvdmount" -nologo -v quiet >&2
    dotnet publish "$ROOT/src/Fvd.Img/Fvd.Img.csproj" -c Release -o "$BUILD/fvd-img" -nologo -v quiet >&2
    touch "$BUILD/fvdmount/fvdmount"
fi
IMG=$BUILD/fvd-img/fvd-img
SERVER=fvdmount
# FVD_OPTS: fvdmount -o options for the FVD views. Default passthrough=off: an image without backing would
# otherwise be served by FUSE passthrough, so fio's O_DIRECT would reach the disk while qsd (cache.direct=off)
# and the backed FVD view write into the page cache; set FVD_OPTS=passthrough=on to measure passthrough.
FVD_OPTS=${FVD_OPTS:-passthrough=off}
log "FVD server: $SERVER"

rm -rf "$W"; mkdir -p "$W" "$RAW"
rm -f "$RAW"/*.json "$RAW"/*.jsonl "$RAW"/*.log "$RAW"/*.err "$RAW"/*.gz
cat > "$RAW/meta.json" <<EOF
{"mode": "$MODE", "date": "$(date -u +%FT%TZ)", "git": "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)",
 "kernel": "$(uname -r)", "cpus": $(nproc), "template_bytes": $T, "virtual_bytes": $V,
 "fvd_server": "$SERVER -o $FVD_OPTS", "qsd_version": "$(qemu-storage-daemon --version | head -1)",
 "qemu_nbd_version": "$(qemu-nbd --version | head -1)", "nbdfuse_version": "$(nbdfuse --version 2>&1 | head -1)",
 "xmount_version": "$(xmount --version 2>&1 | grep -m1 -o 'xmount v[0-9.]*')", "loc_bytes": $LOC_BYTES,
 "fio_version": "$(fio --version)", "qsd_cache_direct": "$QSD_CACHE_DIRECT", "pm_mount_opts": "$PM_MOUNT_OPTS",
 "combos": "$COMBOS", "slice_4k": $SLICE_4K, "reps": $REPS, "slice_64k": $SLICE_64K, "pm_trace_files": $PM_TRACE_FILES, "pm_files": $PM_FILES, "pm_transactions": $PM_TRANS, "pm_reps": $PM_REPS}
EOF

log "template: $((T / MiB)) MiB of random data; virtual disks $((V / MiB)) MiB"
head -c "$T" /dev/urandom > "$W/tpl.raw"

# ---------------------------------------------------------------- image sets and daemons
declare -A DEV PID_OF IMGFILES IO_PID_OF   # IO_PID_OF: the process that reads the image files, if not PID_OF
wait_fuse() { # mountpoint pid
    for _ in $(seq 200); do
        grep -q " $1 fuse" /proc/mounts && return 0
        kill -0 "$2" 2>/dev/null || { echo "daemon for $1 died" >&2; return 1; }
        sleep 0.05
    done
    echo "timeout waiting for $1" >&2; return 1
}
start_qsd() { # view image fmt mountfile [cache.direct]
    local view=$1 img=$2 fmt=$3 mnt=$4 direct=${5:-$QSD_CACHE_DIRECT}
    touch "$mnt"
    local file="driver=file,filename=$img,cache.direct=$direct,aio=threads"
    local node
    if [[ $fmt == raw ]]; then node="driver=raw,node-name=fmt0,file.${file//,/,file.}"
    else node="driver=qcow2,node-name=fmt0,file.${file//,/,file.}"; fi
    qemu-storage-daemon --blockdev "$node" \
        --export type=fuse,id=exp0,node-name=fmt0,mountpoint="$mnt",writable=on \
        > "$RAW/$view.daemon.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid"); FUSE_MNTS+=("$mnt"); PID_OF[$view]=$pid
    wait_fuse "$mnt" "$pid"
    DEV[$view]=$mnt
}
start_fvd() { # view image mountdir [fvdmount -o options]
    local view=$1 img=$2 mnt=$3 opts=${4:-$FVD_OPTS}
    mkdir -p "$mnt"
    "$BUILD/fvdmount/fvdmount" -f -o "$opts" "$img" "$mnt" > "$RAW/$view.daemon.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid"); FUSE_MNTS+=("$mnt"); PID_OF[$view]=$pid
    wait_fuse "$mnt" "$pid"
    DEV[$view]=$mnt/$(basename "${img%.*}").raw
}
# qemu-nbd on a unix socket, nbdfuse showing it as MOUNTDIR/nbd.raw (two hops: FUSE, then NBD).
start_nbd() { # view qcow2 mountdir
    local view=$1 img=$2 mnt=$3 sock=$3.sock
    mkdir -p "$mnt"
    qemu-nbd -k "$sock" -f qcow2 --cache=writeback --aio=threads -t "$img" > "$RAW/$view.qemu-nbd.log" 2>&1 &
    PIDS+=("$!"); IO_PID_OF[$view]=$!
    for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
    nbdfuse "$mnt/nbd.raw" --unix "$sock" > "$RAW/$view.daemon.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid"); FUSE_MNTS+=("$mnt"); PID_OF[$view]=$pid
    wait_fuse "$mnt" "$pid"
    DEV[$view]=$mnt/nbd.raw
}
# xmount daemonizes (libfuse); its PID is looked up by its unique cache file, and it stops when unmounted.
start_xmount() { # view template cachefile mountdir
    local view=$1 tpl=$2 cache=$3 mnt=$4
    mkdir -p "$mnt"
    xmount --in raw "$tpl" --cache "$cache" --out raw "$mnt" > "$RAW/$view.daemon.log" 2>&1
    local pid; pid=$(pgrep -n -f -- "--cache $cache ")
    PIDS+=("$pid"); FUSE_MNTS+=("$mnt"); PID_OF[$view]=$pid
    wait_fuse "$mnt" "$pid"
    DEV[$view]=$mnt/$(basename "${tpl%.*}").dd
}
# SIGTERM each daemon; a detached loop device can keep a mount busy for a moment, and a busy mount makes the
# daemon keep serving, so signal again each second, and after 15 s detach the mount lazily.
stop_daemons() {
    local p m i
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for i in $(seq 30); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        (( alive )) || break
        sleep 0.5
        if (( i % 2 == 0 )); then for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; fi
    done
    for m in "${FUSE_MNTS[@]}"; do grep -q " $m fuse" /proc/mounts && umount -l "$m" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=(); FUSE_MNTS=()
}
# A fresh set of the five views over the same template, all the same virtual size.
new_set() { # name
    local S=$W/$1
    rm -rf "$S"; mkdir -p "$S"
    cp --sparse=always "$W/tpl.raw" "$S/host.raw";  truncate -s "$V" "$S/host.raw"
    cp --sparse=always "$W/tpl.raw" "$S/raw.raw";   truncate -s "$V" "$S/raw.raw"
    cp --sparse=always "$W/tpl.raw" "$S/rawd.raw";  truncate -s "$V" "$S/rawd.raw"
    qemu-img create -q -f qcow2 -b "$W/tpl.raw" -F raw "$S/q.qcow2" "$V"
    qemu-img create -q -f qcow2 -b "$W/tpl.raw" -F raw "$S/nq.qcow2" "$V"
    "$IMG" create -q -b "$W/tpl.raw" -F raw "$S/f.fvd" "$V"
    "$IMG" create -q "$S/n.fvd" "$V"
    "$IMG" create -q "$S/np.fvd" "$V"
    cp --sparse=always "$W/tpl.raw" "$S/xtpl.raw"   # xmount's own read-only template copy (same content)
    DEV[host]=$S/host.raw
    start_qsd qsd-raw "$S/raw.raw" raw "$S/raw.view"
    start_qsd qsd-raw-dio "$S/rawd.raw" raw "$S/rawd.view" on
    start_qsd qsd-qcow2 "$S/q.qcow2" qcow2 "$S/q.view"
    start_nbd nbd-qcow2 "$S/nq.qcow2" "$S/nbdmnt"
    start_xmount xmount "$S/xtpl.raw" "$S/x.cache" "$S/xmnt"
    start_fvd fvd "$S/f.fvd" "$S/fmnt"
    start_fvd fvd-nb "$S/n.fvd" "$S/nmnt"
    start_fvd fvd-nb-pt "$S/np.fvd" "$S/npmnt" "passthrough=on"
    IMGFILES[host]="$S/host.raw"
    IMGFILES[qsd-raw]="$S/raw.raw"
    IMGFILES[qsd-raw-dio]="$S/rawd.raw"
    IMGFILES[qsd-qcow2]="$S/q.qcow2 remote:$W/tpl.raw"
    IMGFILES[nbd-qcow2]="$S/nq.qcow2 remote:$W/tpl.raw"
    IMGFILES[xmount]="$S/x.cache remote:$S/xtpl.raw"
    IMGFILES[fvd]="$S/f.fvd $S/f.data remote:$W/tpl.raw"
    IMGFILES[fvd-nb]="$S/n.fvd $S/n.data"
    IMGFILES[fvd-nb-pt]="$S/np.fvd $S/np.data"
}
# The size of a view's disk: xmount's is the template's.
vsize() { [[ $1 == xmount ]] && echo "$T" || echo "$V"; }
# fvdmount's request counters (status file), one line of JSON per view and moment.
fvd_counters() { # label
    local v f
    for v in fvd fvd-nb; do
        f=$(dirname "${DEV[$v]}")/.fvd/$(basename "${DEV[$v]}" .raw).json
        [[ -r $f ]] && python3 -c "import json,sys;d=json.load(open('$f'));print(json.dumps({'view':'$v','at':'$1','fuse_fds':d.get('fuse_fds'),'requests':d.get('requests')}))" >> "$RAW/counters.jsonl"
    done
    return 0
}

# ---------------------------------------------------------------- fio
fio_run() { # out.json file rw bs mode offset size [extra...]
    local out=$1 file=$2 rw=$3 bs=$4 mode=$5 off=$6 size=$7; shift 7
    local args=(--name=randio --filename="$file" --rw="$rw" --bs="$bs" --direct=1 --randrepeat=0
                --offset="$off" --group_reporting --output-format=json --output="$out")
    case $mode in
        qd1)  args+=(--ioengine=psync --size="$size") ;;
        qd8)  args+=(--ioengine=libaio --iodepth=8 --size="$size") ;;
        4thr) args+=(--ioengine=psync --numjobs=4 --size=$((size / 4)) --offset_increment=$((size / 4))) ;;
    esac
    fio "${args[@]}" "$@" > /dev/null
}

# Warms every view up (the .NET JIT, qemu's caches) on the last 16 MiB of each disk, which no measurement uses.
warmup() {
    local view
    for view in $VIEWS; do
        fio_run "$RAW/warmup.$view.json" "${DEV[$view]}" randrw 4k qd1 $(($(vsize $view) - 16 * MiB)) $((16 * MiB)) --runtime=2 --time_based
    done
}

# Paper Fig. 5: per (region, bs, mode) REPS fresh slices; each view writes every block of its slice once (first),
# again (second), then reads it. Views take turns per slice, so load from elsewhere hits them alike.
randio() {
    log "RandIO: $COMBOS over $VIEWS, $REPS rep(s)"
    new_set randio
    warmup
    local region base off combo bs mode size view phase rw rep
    for region in backed pastend; do
        [[ $region == backed ]] && base=0 || base=$T
        off=$base
        for combo in $COMBOS; do
            bs=${combo%%:*}; mode=${combo##*:}
            [[ $bs == 4k ]] && size=$SLICE_4K || size=$SLICE_64K
            for rep in $(seq 1 $REPS); do
                for view in $VIEWS; do
                    [[ $view == xmount && $region == pastend ]] && continue
                    [[ $view == fvd-nb && $region == backed && $combo == 4k:qd1 ]] && fvd_counters before
                    for phase in first second read; do
                        [[ $phase == read ]] && rw=randread || rw=randwrite
                        fio_run "$RAW/randio.$view.$region.$bs.$mode.$phase.$rep.json" "${DEV[$view]}" $rw $bs $mode $off $size
                    done
                    [[ $view == fvd-nb && $region == backed && $combo == 4k:qd1 ]] && fvd_counters after
                done
                off=$((off + size))
            done
            log "  $region $bs $mode done"
        done
        (( off <= base + T )) || { echo "RandIO slices overflow the region" >&2; exit 1; }
    done
    stop_daemons
}

# ---------------------------------------------------------------- concurrent writes: fio crc32c verify
# 64K random writes, libaio QD16 (then 2 jobs x QD8), verified: a view that returns another request's data
# fails, and its concurrent-write numbers are marked in the report.
verify_all() {
    log "Verify: fio 64K randwrite libaio QD16 and 2 jobs x QD8 with crc32c verify over each view"
    new_set verify
    local view mode
    for view in $VIEWS; do
        for mode in qd16 2x8; do
            local args=(--name=verify --filename="${DEV[$view]}" --rw=randwrite --bs=64k --direct=1 --ioengine=libaio
                        --verify=crc32c --verify_fatal=0 --randrepeat=0 --output-format=json --output="$RAW/verify.$view.$mode.json")
            if [[ $mode == qd16 ]]; then args+=(--iodepth=16 --size=$((32 * MiB)) --offset=$((T - 64 * MiB)))
            else args+=(--iodepth=8 --numjobs=2 --size=$((16 * MiB)) --offset=$((T - 32 * MiB)) --offset_increment=$((16 * MiB)) --group_reporting); fi
            fio "${args[@]}" > /dev/null 2> "$RAW/verify.$view.$mode.err" || true
        done
    done
    stop_daemons
}

# ---------------------------------------------------------------- locality (the paper's point)
# Random 4K first writes over every block of a region of the template, then, with caches dropped, a sequential
# read of that region through the view: qcow2 (and xmount's cache file) store blocks in allocation order, FVD at
# their own address. Data-file seek distance from strace, read throughput from fio.
locality() {
    log "Locality: random 4K first writes over $((LOC_BYTES / MiB)) MiB, then a sequential 1M read with caches dropped"
    new_set locality
    local view st
    for view in host $LOC_VIEWS; do
        fio_run "$RAW/loc.$view.write.json" "${DEV[$view]}" randwrite 4k qd1 $((64 * MiB)) $LOC_BYTES --end_fsync=1
    done
    for view in host $LOC_VIEWS; do
        sync; echo 3 > /proc/sys/vm/drop_caches
        st=""
        if [[ $view != host ]]; then
            strace -f -y -s 0 -e trace=pread64,preadv,preadv2,read -o "$RAW/loc.$view.log" -p "${IO_PID_OF[$view]:-${PID_OF[$view]}}" 2> /dev/null &
            st=$!; sleep 1
        fi
        fio --name=seqread --filename="${DEV[$view]}" --rw=read --bs=1m --direct=1 --ioengine=psync --offset=$((64 * MiB)) \
            --size=$LOC_BYTES --output-format=json --output="$RAW/loc.$view.read.json" > /dev/null
        if [[ -n $st ]]; then
            sleep 0.5; kill -INT "$st"; wait "$st" 2>/dev/null || true
            # shellcheck disable=SC2086
            python3 "$HERE/lib/strace_io.py" "$RAW/loc.$view.log" $((LOC_BYTES / 4096)) "$RAW/loc.$view.trace.json" ${IMGFILES[$view]}
            gzip -f "$RAW/loc.$view.log"
        fi
    done
    stop_daemons
}

# ---------------------------------------------------------------- strace: I/O per 1,000 first writes
trace_io() {
    log "I/O count and seek distance: $TRACE_IOS first writes of 4 KiB at QD1 (then one fsync) under strace"
    new_set trace
    warmup
    local view region off st
    for region in backed pastend; do
        [[ $region == backed ]] && off=0 || off=$T   # 1,000 random 4K writes spread over T
        for view in qsd-raw qsd-qcow2 fvd fvd-nb; do
            strace -f -y -s 0 -e trace=pread64,pwrite64,preadv,pwritev,preadv2,pwritev2,read,write,fdatasync,fsync,sync_file_range \
                -o "$RAW/trace.$view.$region.log" -p "${PID_OF[$view]}" 2> /dev/null &
            st=$!
            sleep 1
            fio_run "$RAW/trace.$view.$region.fio.json" "${DEV[$view]}" randwrite 4k qd1 $off $T --number_ios=$TRACE_IOS --end_fsync=1
            sleep 0.5
            kill -INT "$st"; wait "$st" 2>/dev/null || true
            # shellcheck disable=SC2086
            NORM_BYTES=$V python3 "$HERE/lib/strace_io.py" "$RAW/trace.$view.$region.log" $TRACE_IOS "$RAW/trace.$view.$region.json" ${IMGFILES[$view]}
            gzip -f "$RAW/trace.$view.$region.log"
        done
    done
    # Fig. 7: the same counts during a small PostMark (its time under strace is not a result).
    local loop mnt
    for view in qsd-raw qsd-qcow2 fvd fvd-nb; do
        loop=$(losetup -f --show --direct-io=off -o "$T" --sizelimit $((V - T)) "${DEV[$view]}"); LOOPS+=("$loop")
        mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$loop"
        mnt=$W/trace/ext4.$view; mkdir -p "$mnt"
        mount -o "$PM_MOUNT_OPTS" "$loop" "$mnt"; EXT_MNTS+=("$mnt")
        postmark_cfg "$mnt" $PM_TRACE_FILES $PM_TRACE_TRANS > "$W/trace/pm.$view.cfg"
        strace -f -y -s 0 -e trace=pread64,pwrite64,preadv,pwritev,preadv2,pwritev2,read,write,fdatasync,fsync,sync_file_range \
            -o "$RAW/trace.$view.postmark.log" -p "${PID_OF[$view]}" 2> /dev/null &
        st=$!
        sleep 1
        postmark "$W/trace/pm.$view.cfg" > /dev/null
        sync -f "$mnt/."
        sleep 0.5
        kill -INT "$st"; wait "$st" 2>/dev/null || true
        umount "$mnt"; EXT_MNTS=()
        losetup -d "$loop"; LOOPS=()
        # shellcheck disable=SC2086
        NORM_BYTES=$V python3 "$HERE/lib/strace_io.py" "$RAW/trace.$view.postmark.log" $PM_TRACE_FILES "$RAW/trace.$view.postmark.json" ${IMGFILES[$view]}
        gzip -f "$RAW/trace.$view.postmark.log"
    done
    stop_daemons
}

postmark_cfg() { # location files transactions
    printf 'set location %s\nset number %d\nset transactions %d\nset size 10000 50000\nset subdirectories 10\nset read 4096\nset write 4096\nset buffering false\nrun\nquit\n' "$1" "$2" "$3"
}

# ---------------------------------------------------------------- PostMark on ext4 in a loop device
postmark_all() {
    log "PostMark: $PM_FILES files, $PM_TRANS transactions, ext4 -o $PM_MOUNT_OPTS in a loop device over each view, $PM_REPS rep(s)"
    new_set postmark
    # Each rep gets its own fresh partition past the template's end (the paper's second partition), so every rep
    # writes blocks for the first time; views take turns within a rep.
    local part=$(( (V - T) / PM_REPS / MiB * MiB ))
    local view loop mnt dio rep
    for rep in $(seq 1 $PM_REPS); do
        for view in $PM_VIEWS; do
            # qsd 7.2 corrupts concurrent direct writes (shared/research/peer-findings.md), so the loop devices over
            # FUSE views are buffered (writes still go through to the daemons: no FUSE writeback cache); the host
            # view's loop device uses direct I/O.
            [[ $view == host ]] && dio=on || dio=off
            loop=$(losetup -f --show --direct-io=$dio -o $((T + (rep - 1) * part)) --sizelimit $part "${DEV[$view]}"); LOOPS+=("$loop")
            mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$loop"
            mnt=$W/postmark/ext4.$view; mkdir -p "$mnt"
            mount -o "$PM_MOUNT_OPTS" "$loop" "$mnt"; EXT_MNTS+=("$mnt")
            postmark_cfg "$mnt" $PM_FILES $PM_TRANS > "$W/postmark/pm.$view.cfg"
            python3 "$HERE/lib/pm_time.py" "$W/postmark/pm.$view.cfg" "$RAW/postmark.$view.$rep.json" > "$RAW/postmark.$view.$rep.log"
            umount "$mnt"; EXT_MNTS=()
            losetup -d "$loop"; LOOPS=()
            log "  rep $rep $view: $(python3 -c "import json;j=json.load(open('$RAW/postmark.$view.$rep.json'));print(f\"{j['create_files_per_s']:.0f} files/s, {j['transactions_per_s']:.0f} tx/s\")")"
        done
    done
    stop_daemons
}

# ---------------------------------------------------------------- 1 TiB footprint
rss_of() { awk '/^VmRSS/{r=$2}/^VmHWM/{h=$2}END{printf "{\"rss_kib\": %d, \"hwm_kib\": %d}", r, h}' "/proc/$1/status"; }
footprint() {
    log "Footprint: 1 TiB virtual disk over a 1 TiB sparse template"
    local S=$W/tib t0 t1
    rm -rf "$S"; mkdir -p "$S"
    truncate -s 1T "$S/tpl1t.raw"
    t0=$(date +%s.%N); "$IMG" create -q -b "$S/tpl1t.raw" -F raw "$S/big.fvd" $((1 << 40)); t1=$(date +%s.%N)
    qemu-img create -q -f qcow2 -b "$S/tpl1t.raw" -F raw "$S/big.qcow2" 1T
    local q_created; q_created=$(stat -c %s "$S/big.qcow2")
    local fvd_info; fvd_info=$("$IMG" info --output=json "$S/big.fvd" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("block_size=%d virtual_size=%d backing_size=%d" % (d["cluster-size"], d["virtual-size"], d["format-specific"]["data"]["backing-size"]))')
    start_fvd fvd-1t "$S/big.fvd" "$S/fmnt"
    start_qsd qsd-qcow2-1t "$S/big.qcow2" qcow2 "$S/q.view"
    local idle_f idle_q; idle_f=$(rss_of "${PID_OF[fvd-1t]}"); idle_q=$(rss_of "${PID_OF[qsd-qcow2-1t]}")
    local v
    for v in fvd-1t qsd-qcow2-1t; do
        fio --name=spread --filename="${DEV[$v]}" --rw=randrw --bs=4k --direct=1 --ioengine=psync --size=1T \
            --number_ios=4000 --norandommap --randrepeat=0 --output-format=json --output="$RAW/footprint.$v.fio.json" > /dev/null
    done
    local busy_f busy_q; busy_f=$(rss_of "${PID_OF[fvd-1t]}"); busy_q=$(rss_of "${PID_OF[qsd-qcow2-1t]}")
    stop_daemons
    cat > "$RAW/footprint.json" <<EOF
{"virtual_bytes": $((1 << 40)), "fvd_create_s": $(python3 -c "print($t1 - $t0)"),
 "fvd_info": "$fvd_info",
 "fvd_meta_bytes": $(stat -c %s "$S/big.fvd"), "fvd_meta_alloc_bytes": $(($(stat -c %b "$S/big.fvd") * 512)),
 "fvd_data_alloc_bytes_after_io": $(($(stat -c %b "$S/big.data") * 512)),
 "qcow2_created_bytes": $q_created, "qcow2_file_bytes_after_io": $(stat -c %s "$S/big.qcow2"), "qcow2_alloc_bytes_after_io": $(($(stat -c %b "$S/big.qcow2") * 512)),
 "fvd_rss_idle": $idle_f, "fvd_rss_after_io": $busy_f, "qsd_rss_idle": $idle_q, "qsd_rss_after_io": $busy_q}
EOF
    rm -rf "$S"
}

T_START=$(date +%s)
[[ ,$SKIP, == *,randio,* ]] || randio
[[ ,$SKIP, == *,verify,* ]] || verify_all
[[ ,$SKIP, == *,locality,* ]] || locality
[[ ,$SKIP, == *,strace,* ]] || trace_io
[[ ,$SKIP, == *,postmark,* ]] || postmark_all
[[ ,$SKIP, == *,footprint,* ]] || footprint
echo "{\"elapsed_s\": $(( $(date +%s) - T_START ))}" > "$RAW/elapsed.json"
python3 "$HERE/lib/report.py" "$RAW" "$OUT"
log "done in $(( $(date +%s) - T_START )) s: $OUT/results.md"
exit 0
}
