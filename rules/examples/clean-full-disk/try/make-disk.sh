#!/usr/bin/env bash
# Makes the example's disk: a 32 MiB ext4 image mounted at /tmp/batond-example-disk
# (a real block device, so batond's host source reports it), then fills it to about
# 90% with cache/*.tmp files: above the rule's 80%, short of a full disk (a full disk
# would fail the writes of anything else on it). Needs root (mount -o loop).
# `make-disk.sh remove` undoes it.
set -euo pipefail
dir=/tmp/batond-example-disk
img=/tmp/batond-example-disk.img
target=${FILL_PERCENT:-90}
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
used_percent() { df --output=pcent "$dir" | tail -1 | tr -dc 0-9; }
i=0
# 512 KiB at a time until df shows the target (df rounds up, as batond's figure does)
while (( $(used_percent) < target )); do
  i=$((i + 1))
  head -c 512K /dev/zero > "$dir/cache/blob-$i.tmp"
  sync -f "$dir/cache"
done
df -h "$dir"
