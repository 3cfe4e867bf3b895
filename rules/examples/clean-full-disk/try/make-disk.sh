#!/usr/bin/env bash
# Makes the example's disk: a 32 MiB ext4 image mounted at /tmp/batond-example-disk
# (a real block device, so batond's host source reports it), about 90% full of
# cache/*.tmp files. Needs root (losetup/mount). `make-disk.sh remove` undoes it.
set -euo pipefail
dir=/tmp/batond-example-disk
img=/tmp/batond-example-disk.img
if [[ ${1:-} == remove ]]; then
  umount "$dir" 2>/dev/null || true
  rm -rf "$dir" "$img"
  exit 0
fi
mkdir -p "$dir"
if ! mountpoint -q "$dir"; then
  truncate -s 32M "$img"
  mkfs.ext4 -q -F "$img"
  mount -o loop "$img" "$dir"
fi
mkdir -p "$dir/cache"
for i in $(seq 1 26); do
  head -c 1M /dev/zero > "$dir/cache/blob-$i.tmp"
done
df -h "$dir"
