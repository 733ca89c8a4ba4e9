#!/usr/bin/env bash
# make deb: a Debian package of the NativeAOT tools (no .NET runtime needed on the target).
#   usage: build-deb.sh PUBLISH_DIR VERSION OUT_DIR   (PUBLISH_DIR = out/lib/fvdfuse from make publish)
# The package version is VERSION-1 (Debian revision 1). lintian on the result: see tests/package-tests.sh.
set -euo pipefail
pub=${1:?usage: build-deb.sh PUBLISH_DIR VERSION OUT_DIR}
version=${2:?version}
outdir=${3:?out dir}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
arch=$(dpkg --print-architecture)
# The tree is laid out as a debian/ directory so that dpkg-shlibdeps can compute Depends from the binaries.
top=$(mktemp -d)
trap 'rm -rf "$top"' EXIT
stage=$top/debian/fvdfuse
mkdir -p "$stage"
chmod 755 "$top" "$top/debian" "$stage"
printf 'Source: fvdfuse\n\nPackage: fvdfuse\nArchitecture: any\n' > "$top/debian/control"

debversion="$version-1"
install -d "$stage/DEBIAN" "$stage/usr/lib/fvdfuse" "$stage/usr/bin" "$stage/usr/sbin" \
  "$stage/usr/share/man/man1" "$stage/usr/share/man/man5" "$stage/usr/share/man/man8" "$stage/lib/systemd/system" \
  "$stage/usr/share/doc/fvdfuse" "$stage/usr/share/bash-completion/completions"
install -m 755 "$pub/fvd-img" "$pub/fvdmount" "$stage/usr/lib/fvdfuse/"
install -m 644 "$pub/libMono.Unix.so" "$stage/usr/lib/fvdfuse/"
ln -s ../lib/fvdfuse/fvd-img "$stage/usr/bin/fvd-img"
ln -s ../lib/fvdfuse/fvdmount "$stage/usr/bin/fvdmount"
# mount(8) runs /sbin/mount.fuse.fvd for "mount -t fuse.fvd" and fstab lines (/sbin is /usr/sbin on Debian).
install -m 755 "$here/mount.fuse.fvd" "$stage/usr/sbin/mount.fuse.fvd"
install -m 644 "$here/fvdmount@.service" "$stage/lib/systemd/system/"
for m in "$root"/man/*.1; do gzip -9n < "$m" > "$stage/usr/share/man/man1/$(basename "$m").gz"; done
for m in "$root"/man/*.5; do gzip -9n < "$m" > "$stage/usr/share/man/man5/$(basename "$m").gz"; done
# mount.fuse.fvd is described in fvdmount(1) (FILES, EXAMPLES).
printf '.so man1/fvdmount.1\n' | gzip -9n > "$stage/usr/share/man/man8/mount.fuse.fvd.8.gz"
install -m 644 "$here/completion/fvd-img" "$here/completion/fvdmount" "$stage/usr/share/bash-completion/completions/"
install -m 644 "$here/copyright" "$stage/usr/share/doc/fvdfuse/copyright"
# The changelog's date is the last commit's, so that two builds of one commit give the same package.
when=$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
cat <<CL | gzip -9n > "$stage/usr/share/doc/fvdfuse/changelog.Debian.gz"
fvdfuse ($debversion) unstable; urgency=medium

  * Package built from FvdFuse commit $commit.

 -- FvdFuse developers <fvdfuse@example.org>  $(LC_ALL=C date -u -R -d "@$when")
CL
# The shared libraries (and their versions) the binaries need: libc6, zlib1g.
shlibs=$(cd "$top" && dpkg-shlibdeps -O -e debian/fvdfuse/usr/lib/fvdfuse/fvd-img -e debian/fvdfuse/usr/lib/fvdfuse/fvdmount \
  -e debian/fvdfuse/usr/lib/fvdfuse/libMono.Unix.so 2> >(grep -v 'should already be installed' >&2) | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build-deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
(cd "$stage" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum > DEBIAN/md5sums)
cat > "$stage/DEBIAN/control" <<CTRL
Package: fvdfuse
Version: $debversion
Architecture: $arch
Maintainer: FvdFuse developers <fvdfuse@example.org>
Installed-Size: $size
Depends: $shlibs, fuse3
Recommends: qemu-utils
Section: admin
Priority: optional
Description: FVD virtual-disk images shown as raw files through FUSE
 fvd-img creates, inspects, checks and converts FVD (Fast Virtual Disk) images:
 copy-on-write over a read-only template (raw file or HTTP URL) with a bitmap,
 copy-on-read and adaptive prefetching. fvdmount shows each image as a plain
 raw file under a mount point, for qemu, libvirt, losetup, mkfs and fsck.
CTRL
mkdir -p "$outdir"
deb="$outdir/fvdfuse_${debversion}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
