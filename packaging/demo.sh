#!/usr/bin/env bash
# make run: builds a small demo template (an ext4 file system in a raw file), an FVD image over it that is
# larger than the template (the paper's min-size template), shows it, and mounts it as a RAW file.
set -euo pipefail
bin=${1:?usage: demo.sh BIN_DIR DEMO_DIR}
demo=${2:?usage: demo.sh BIN_DIR DEMO_DIR}
mkdir -p "$demo/mnt"
if mountpoint -q "$demo/mnt"; then umount "$demo/mnt" || umount -l "$demo/mnt"; fi
rm -f "$demo"/template.raw "$demo"/disk.fvd "$demo"/disk.data

echo "== template: 64 MiB raw file with an ext4 file system"
truncate -s 64M "$demo/template.raw"
mkfs.ext4 -q -F -L template "$demo/template.raw"
debugfs -w -R "write /etc/os-release os-release" "$demo/template.raw" >/dev/null 2>&1 || true

echo "== FVD image: 1 GiB virtual disk over the template"
"$bin/fvd-img" create -b template.raw -F raw "$demo/disk.fvd" 1G
"$bin/fvd-img" info "$demo/disk.fvd"

if [ -x "$bin/fvdmount" ] && [ -e /dev/fuse ] && [ "$(id -u)" = 0 ]; then
  echo "== mounting: $demo/mnt/disk.raw"
  "$bin/fvdmount" "$demo/disk.fvd" "$demo/mnt"
  ls -l "$demo/mnt"
  cat <<EOT

The image is mounted. $demo/mnt/disk.raw is a plain RAW disk; try:
  qemu-img info -f raw $demo/mnt/disk.raw
  dev=\$(losetup --find --show --direct-io=on $demo/mnt/disk.raw); e2fsck -fn \$dev; losetup -d \$dev
  qemu-system-x86_64 -drive file=$demo/mnt/disk.raw,format=raw,cache=none ...
  $bin/fvd-img map $demo/disk.fvd
Unmount (flushes the bitmap and marks the image clean):
  umount $demo/mnt
EOT
else
  echo "(fvdmount needs root and /dev/fuse; skipped the mount)"
fi
