#!/usr/bin/env bash
# Runs one lab benchmark driver: tests/bench/on-lab.sh DRIVER [ARGS...], where DRIVER is one
# of the triad-tests binaries (triad-failover-bench, triad-galera-bench,
# triad-backup-bench, triad-web-bench).
# The benchmark scripts beside it call this; each documents its own arguments.
# Needs root. Builds the release agent and the driver, brings a lab up with the release agent
# (unless one is up already: then it uses that lab as it is), and takes it down at the end
# when it brought it up. Exits with the driver's status.
set -euo pipefail

driver="${1:?usage: tests/bench/on-lab.sh DRIVER [ARGS...]}"
shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
cargo="${CARGO:-cargo}"
target="${CARGO_TARGET_DIR:-$root/target}"

"$cargo" build --release -p triad --bin triad
"$cargo" build --release -p triad-tests --bin "$driver" --bin triad-lab
export TRIAD_BIN="${TRIAD_BIN:-$target/release/triad}"

owned=0
if ! "$target/release/triad-lab" status >/dev/null 2>&1; then
  "$target/release/triad-lab" up
  owned=1
fi
status=0
"$target/release/$driver" "$@" || status=$?
if [ "$owned" = 1 ]; then
  "$target/release/triad-lab" down
fi
exit "$status"
