#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints, unit and golden tests, the
# seeded simulations, process-level tests of real agents, (as root) the Debian package's
# install and removal and the lab tests against real services, and a short fuzzing run. This
# is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
step() { printf '\n== %s  [+%ss]\n' "$1" "$(( $(date +%s) - t0 ))"; }

step "packages"
if [ "$(id -u)" = 0 ]; then
  tests/install-packages.sh
  # The packages are installed: a test that cannot find a real service's binary fails
  # (tests/common's `binary`) rather than skip.
  export CI="${CI:-1}"
else
  echo "not root: not installing packages; tests that need real services print why they skip"
fi

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path agent/fuzz/Cargo.toml -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
# The binaries (dev profile, used by the process and lab tests) and every test target (test
# profile, optimised for the simulations), so that the test step compiles nothing more.
cargo build --workspace --locked
cargo test --workspace --locked --no-run

step "systemd unit"
if command -v systemd-analyze >/dev/null; then
  unit_dir=$(mktemp -d)
  sed "s|/usr/bin/triad|$PWD/target/debug/triad|g" systemd/triad.service >"$unit_dir/triad.service"
  # Unknown keys only warn (exit 0), so any output at all fails the check.
  out=$(systemd-analyze verify "$unit_dir/triad.service" 2>&1) || { echo "$out"; exit 1; }
  [ -z "$out" ] || { echo "systemd-analyze verify warned:"; echo "$out"; exit 1; }
  echo "systemd/triad.service verifies cleanly"
  # The sandbox's exposure score: at most 3.0 (issue 16).
  score=$(systemd-analyze security --offline=yes "$unit_dir/triad.service" 2>/dev/null \
    | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  echo "systemd-analyze security: exposure $score (bound 3.0)"
  awk -v s="$score" 'BEGIN { exit !(s != "" && s + 0 <= 3.0) }' \
    || { echo "exposure ${score:-unknown} is above 3.0"; exit 1; }
  rm -rf "$unit_dir"
else
  echo "systemd-analyze not installed: unit not verified"
fi

step "Debian package (install, remove, purge)"
tests/package.sh target/debug/triad

step "tests"
cargo test --workspace --locked

step "fuzz (20 s per target; agent/fuzz/run.sh 600 is the long run)"
agent/fuzz/run.sh 20

step "all checks passed"
