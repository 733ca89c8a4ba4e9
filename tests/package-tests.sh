#!/usr/bin/env bash
# The shipped artifacts, as a user gets them: builds the Debian package (NativeAOT binaries), runs lintian
# on it (no errors allowed), installs it with dpkg -i, runs the README quick start from the installed paths
# (fvd-img, fvdmount, mount -t fuse.fvd, an fstab line through mount -T) with DOTNET_ROOT pointing nowhere,
# so a binary that still needed the .NET runtime would fail, then removes and purges it and checks that
# none of its files is left. Installing needs root; it refuses to run over a /usr/bin/fvd-img or fvdmount
# that no package owns (a developer's make install PREFIX=/usr). Prints "package: N passed, N failed".
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
chmod 755 "$work"
installed=0
cleanup() {
  mountpoint -q "$work/mnt" && umount "$work/mnt"
  [ "$installed" = 1 ] && dpkg --purge fvdfuse >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# What is in the package, before installing it.
check "control lists fuse3" bash -c "dpkg-deb -f '$deb' Depends | grep -q 'fuse3'"
check "control has a libc6 version" bash -c "dpkg-deb -f '$deb' Depends | grep -Eq 'libc6 \(>= [0-9.]+\)'"
check "copyright names MIT and the packages" bash -c "dpkg-deb --fsys-tarfile '$deb' | tar -xO ./usr/share/doc/fvdfuse/copyright \
  | grep -q '^License: MIT' && dpkg-deb --fsys-tarfile '$deb' | tar -xO ./usr/share/doc/fvdfuse/copyright | grep -q 'Mono.Unix'"
check "changelog.Debian.gz" bash -c "dpkg-deb -c '$deb' | grep -q ' ./usr/share/doc/fvdfuse/changelog.Debian.gz$'"
check "bash completions" bash -c "dpkg-deb -c '$deb' | grep -q 'completions/fvd-img$' && dpkg-deb -c '$deb' | grep -q 'completions/fvdmount$'"
check "no .dbg files" bash -c "! dpkg-deb -c '$deb' | grep -q '\.dbg$'"
if command -v lintian >/dev/null; then
  lintian --tag-display-limit 0 "$deb" > "$work/lintian.txt" 2>&1
  check "lintian: no errors" bash -c "! grep '^E:' '$work/lintian.txt'"
  grep '^[WI]:' "$work/lintian.txt" | sed 's/^/package: lintian /' >&2
else
  fail=$((fail + 1)); echo "package: FAILED lintian is not installed (apt-get install lintian)" >&2
fi

if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then
  echo "package: not root or no /dev/fuse: install, quick start and removal not run" >&2
  echo "package: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]; exit
fi
for f in /usr/bin/fvd-img /usr/bin/fvdmount /usr/sbin/mount.fuse.fvd; do
  if [ -e "$f" ] && ! dpkg -S "$f" >/dev/null 2>&1; then
    echo "package: $f exists and belongs to no package (a make install?): not installing over it" >&2
    echo "package: $pass passed, 1 failed"; exit 1
  fi
done

check "dpkg -i" dpkg -i "$deb"
dpkg -s fvdfuse >/dev/null 2>&1 && installed=1
dpkg -L fvdfuse > "$work/files.txt" 2>/dev/null
export DOTNET_ROOT=/nonexistent
img=/usr/bin/fvd-img; mnt_bin=/usr/bin/fvdmount
check "binaries are native" bash -c "! file -L $img $mnt_bin | grep -qi 'PE32\|assembly'"
check "fvd-img --version" $img --version
check "man pages" bash -c "man -w fvd-img && man -w fvdmount && man -w 5 fvd && man -w mount.fuse.fvd"
if [ -f /usr/share/bash-completion/bash_completion ]; then
  check "completion: fvd-img subcommand" bash -c "source /usr/share/bash-completion/bash_completion; source /usr/share/bash-completion/completions/fvd-img
    COMP_WORDS=(fvd-img cr); COMP_CWORD=1; COMP_LINE='fvd-img cr'; COMP_POINT=10; _fvd_img; [ \"\${COMPREPLY[*]}\" = create ]"
  check "completion: fvdmount -o name" bash -c "source /usr/share/bash-completion/bash_completion; source /usr/share/bash-completion/completions/fvdmount
    COMP_WORDS=(fvdmount -o ro,allow_o); COMP_CWORD=2; COMP_LINE='fvdmount -o ro,allow_o'; COMP_POINT=22; _fvdmount; [ \"\${COMPREPLY[*]}\" = ro,allow_other ]"
fi

# The README quick start, from the installed paths.
cd "$work"
truncate -s 32M t.raw; dd if=/dev/urandom of=t.raw bs=1M count=2 conv=notrunc status=none
check "fvd-img create" $img create -b t.raw -F raw v.fvd 64M
check "fvd-img info" bash -c "$img info --output=json v.fvd | grep -q '\"virtual-size\": 67108864'"
check "fvd-img map" $img map --output=json v.fvd
check "fvd-img check" $img check v.fvd
check "fvd-img convert" bash -c "$img convert -O raw v.fvd flat.raw && cmp <(head -c 32M flat.raw) t.raw"
mkdir -p mnt
# Right after umount: fvd-img check itself waits for the exiting daemon's lock (man/fvd.5, LOCKING).
check "fvdmount" $mnt_bin -o cor=off v.fvd mnt
check "view reads the template" bash -c "cmp <(head -c 32M mnt/v.raw) t.raw"
check "O_DIRECT write" dd if=/dev/urandom of=mnt/v.raw bs=4k count=16 seek=100 oflag=direct conv=notrunc,fsync status=none
check "umount" umount mnt
check "fvd-img check after umount" $img check v.fvd
# What the view must show from now on (the template plus the write above).
check "expected view" $img convert -O raw v.fvd expected.raw
# mount(8) runs the installed /usr/sbin/mount.fuse.fvd, which runs the installed fvdmount.
check "mount -t fuse.fvd" mount -t fuse.fvd -o cor=off "$work/v.fvd" "$work/mnt"
check "mount -t: view" cmp mnt/v.raw expected.raw
check "umount (mount -t)" umount mnt
check "check after mount -t" $img check v.fvd
printf '%s %s fuse.fvd cor=off,nofail 0 0\n' "$work/v.fvd" "$work/mnt" > fstab
check "mount -T fstab" mount -T "$work/fstab" "$work/mnt"
check "fstab mount: view" cmp mnt/v.raw expected.raw
check "umount (fstab)" umount mnt
check "check after fstab mount" $img check v.fvd
cd - >/dev/null

# Removal leaves nothing behind.
check "dpkg -r" dpkg -r fvdfuse
check "dpkg --purge" dpkg --purge fvdfuse
check "not installed" bash -c "! dpkg -s fvdfuse >/dev/null 2>&1"
installed=0
left=""
while read -r f; do
  [ -d "$f" ] && continue # directories shared with other packages stay
  [ -e "$f" ] || [ -L "$f" ] && left="$left $f"
done < "$work/files.txt"
check "no file of the package left" bash -c "[ -s '$work/files.txt' ] && [ -z '$left' ] || { echo 'left:$left'; false; }"
check "no fvdfuse directory left" bash -c "[ ! -e /usr/lib/fvdfuse ] && [ ! -e /usr/share/doc/fvdfuse ]"
echo "package: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
