#!/usr/bin/env bash
# Backup benchmark on the lab (not a test), issue 15: per run, an insert load through every
# node's HAProxy, idle first, then during `triad backup now`; prints the backup's duration
# and size per component and the insert latency p50/p99 idle against during the backup
# (target: p99 during a backup <= 1.5x idle).
#   tests/bench/backup.sh [--runs N] [--data-mb M] [--idle-secs S]
# Needs root. Builds the release agent and driver, brings a lab up with the release agent
# (unless one is up already: then it uses that lab as it is), and takes it down at the end
# when it brought it up.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
cargo="${CARGO:-cargo}"
target="${CARGO_TARGET_DIR:-$root/target}"

"$cargo" build --release -p triad --bin triad
"$cargo" build --release -p triad-tests --bin triad-backup-bench --bin triad-lab
export TRIAD_BIN="${TRIAD_BIN:-$target/release/triad}"

owned=0
if ! "$target/release/triad-lab" status >/dev/null 2>&1; then
  "$target/release/triad-lab" up
  owned=1
fi
status=0
"$target/release/triad-backup-bench" "$@" || status=$?
if [ "$owned" = 1 ]; then
  "$target/release/triad-lab" down
fi
exit "$status"
