#!/usr/bin/env bash
# Galera benchmark on the lab (not a test), under a write load through every node's HAProxy:
# - recovery: the time from kill -9 of one node until its agent has it Synced again (IST or
#   SST), the time from kill -9 of all three until writes are accepted through every HAProxy
#   and until all three are Synced, and acknowledged inserts lost (must be 0). `--manual` also
#   measures a scripted manual recovery (--wsrep-recover, bootstrap the most advanced, start
#   the others) in the same run, for comparison; `--skip-agent` measures only that.
# - the Galera writer (issue 13), Triad against the clustercheck-style recipe (fe_mysql_recipe:
#   n1 active, n2/n3 backup, mysql-check) side by side: kill -9 of the writer (writes restored
#   through every HAProxy) and of a non-writer (longest commit stall), the rejoined node's
#   readmission after it is Synced, acknowledged inserts lost; p50/p99/max and the ratio. The
#   recipe's runs turn maintenance on (Triad takes no action) and restore the node by hand.
#   `--skip-recipe` measures Triad only, `--skip-agent` the recipe only.
#   tests/bench/galera.sh [--runs N] [--outage-runs N] [--manual] [--skip-agent]
#                         [--writer-runs N] [--nonwriter-runs N] [--skip-recipe]
#   e.g. the writer cases alone: tests/bench/galera.sh --runs 0 --outage-runs 0 \
#          --writer-runs 10 --nonwriter-runs 10
# Needs root. Builds the release agent and driver, brings a lab up with the release agent
# (unless one is up already: then it uses that lab as it is), and takes it down at the end
# when it brought it up.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
cargo="${CARGO:-cargo}"
target="${CARGO_TARGET_DIR:-$root/target}"

"$cargo" build --release -p triad --bin triad
"$cargo" build --release -p triad-tests --bin triad-galera-bench --bin triad-lab
export TRIAD_BIN="${TRIAD_BIN:-$target/release/triad}"

owned=0
if ! "$target/release/triad-lab" status >/dev/null 2>&1; then
  "$target/release/triad-lab" up
  owned=1
fi
status=0
"$target/release/triad-galera-bench" "$@" || status=$?
if [ "$owned" = 1 ]; then
  "$target/release/triad-lab" down
fi
exit "$status"
