#!/usr/bin/env bash
# Redis failover benchmark on the lab (not a test): Triad against Redis Sentinel, kill -9 of
# the master, time until a write succeeds through every node's HAProxy (p50/p99/max, ratio,
# spurious second failovers), and the partition case with lost acknowledged writes.
#   tests/bench/failover.sh [--runs N] [--hung-runs N] [--partition-runs N] [--skip-sentinel]
# Needs root. Builds the release agent and driver, brings a lab up with the release agent
# (unless one is up already: then it uses that lab as it is), and takes it down at the end
# when it brought it up.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
cargo="${CARGO:-cargo}"
target="${CARGO_TARGET_DIR:-$root/target}"

"$cargo" build --release -p triad --bin triad
"$cargo" build --release -p triad-tests --bin triad-failover-bench --bin triad-lab
export TRIAD_BIN="${TRIAD_BIN:-$target/release/triad}"

owned=0
if ! "$target/release/triad-lab" status >/dev/null 2>&1; then
  "$target/release/triad-lab" up
  owned=1
fi
status=0
"$target/release/triad-failover-bench" "$@" || status=$?
if [ "$owned" = 1 ]; then
  "$target/release/triad-lab" down
fi
exit "$status"
