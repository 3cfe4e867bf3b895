#!/usr/bin/env bash
# Makes the example's "site" in /tmp/batond-example-dr (or $1): a primary, a
# backup of it, an empty standby, and `active` (the traffic) pointing at the primary.
set -euo pipefail
root=${1:-/tmp/batond-example-dr}
rm -rf "$root"
mkdir -p "$root/primary/data" "$root/backups" "$root/standby"
echo "orders: 42" > "$root/primary/data/db.txt"
touch "$root/primary/data/ready" "$root/primary/healthy"
tar -czf "$root/backups/backup-$(date +%Y%m%dT%H%M%S).tar.gz" -C "$root/primary" data
ln -sfn "$(ls -1t "$root"/backups/backup-*.tar.gz | head -1)" "$root/backups/latest.tar.gz"
ln -sfn "$root/primary" "$root/active"
ls -l "$root" "$root/backups"
