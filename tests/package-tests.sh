#!/usr/bin/env bash
# The shipped artifacts, as a user gets them: builds the Debian package (NativeAOT binaries), unpacks it
# into a scratch root and drives the unpacked fvd-img and fvdmount with DOTNET_ROOT pointing nowhere, so a
# binary that still needed the .NET runtime would fail. Prints "package: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
deb=$(make -s deb 2>&1 | tail -1)
pass=0; fail=0
check() { # check NAME CMD...: one test
  local name=$1; shift
  if out=$("$@" 2>&1); then pass=$((pass + 1)); else fail=$((fail + 1)); echo "package: FAILED $name: $out" >&2; fi
}
[ -f "$deb" ] || { echo "package: no .deb built ($deb)"; echo "package: 0 passed, 1 failed"; exit 1; }
work=$(mktemp -d)
cleanup() { mountpoint -q "$work/mnt" && umount "$work/mnt"; rm -rf "$work"; }
trap cleanup EXIT
dpkg-deb -x "$deb" "$work/root"
export DOTNET_ROOT=/nonexistent PATH="$work/root/usr/bin:$PATH"
img="$work/root/usr/bin/fvd-img"; mnt_bin="$work/root/usr/bin/fvdmount"

check "control lists fuse3" bash -c "dpkg-deb -f '$deb' Depends | grep -q fuse3"
check "binaries are native" bash -c "! file -L '$img' '$mnt_bin' | grep -qi 'PE32\|assembly'"
check "fvd-img --version" "$img" --version
truncate -s 32M "$work/t.raw"; dd if=/dev/urandom of="$work/t.raw" bs=1M count=2 conv=notrunc status=none
check "fvd-img create" "$img" create -b "$work/t.raw" -F raw "$work/v.fvd" 64M
check "fvd-img info" bash -c "'$img' info --output=json '$work/v.fvd' | grep -q '\"virtual-size\": 67108864'"
mkdir -p "$work/mnt"
if [ -e /dev/fuse ] && [ "$(id -u)" = 0 ]; then
  # mount(8)'s helper from the package, running the package's fvdmount.
  check "mount -t fuse.fvd" env FVDMOUNT="$mnt_bin" "$work/root/usr/sbin/mount.fuse.fvd" "$work/v.fvd" "$work/mnt" -o cor=off
  check "view reads the template" bash -c "cmp <(head -c 32M '$work/mnt/v.raw') '$work/t.raw'"
  check "O_DIRECT write" dd if=/dev/urandom of="$work/mnt/v.raw" bs=4k count=16 seek=100 oflag=direct conv=notrunc,fsync status=none
  check "umount" umount "$work/mnt"
  for _ in $(seq 50); do "$img" check "$work/v.fvd" >/dev/null 2>&1 && break; sleep 0.2; done
  check "fvd-img check after umount" "$img" check "$work/v.fvd"
fi
echo "package: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
