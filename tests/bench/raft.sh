#!/usr/bin/env bash
# Raft benchmark of a local three-node Triad cluster on loopback (not a test):
#   - commit latency of sequential POST /v1/maintenance through the leader (p50/p99/max),
#   - leader re-election time after kill -9 of the leader (each run, p50/max).
# Builds the release agent and the bench driver, then runs the driver against the release
# agent (TRIAD_BIN overrides which agent binary runs). Extra arguments go to the driver:
#   tests/bench/raft.sh [--proposals N] [--elections R]
# Uses the fixed ports 7101-7103/7201-7203 and the lock /tmp/triad-local-cluster.lock, so it
# waits while the local-cluster tests run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
cargo="${CARGO:-cargo}"
target="${CARGO_TARGET_DIR:-$root/target}"

"$cargo" build --release -p triad --bin triad
"$cargo" build --release -p triad-tests --bin triad-raft-bench

export TRIAD_BIN="${TRIAD_BIN:-$target/release/triad}"
exec "$target/release/triad-raft-bench" "$@"
