#!/bin/sh
# Some data to back up: /tmp/batond-example-backup/data
set -eu
root=${1:-/tmp/batond-example-backup}
mkdir -p "$root/data"
for n in 1 2 3; do
    seq 1 2000 > "$root/data/table-$n.csv"
done
echo "data in $root/data"
