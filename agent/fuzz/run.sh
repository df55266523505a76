#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer on the stable toolchain and runs each for a while:
#   agent/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 20 s, every target)
# CI runs 20 s per target; the documented long run is `agent/fuzz/run.sh 600`. Each target
# starts from the real captures the agent's tests use (agent/tests/fixtures/SERVICE; the
# shipped example config for `config`) plus what earlier runs found (agent/fuzz/corpus/TARGET,
# not committed; new inputs go there only); a crash
# leaves its input in agent/fuzz/artifacts/TARGET/ and fails the run, naming the file and the
# command that replays it. Prints per target: runs, executions per second, coverage, crashes.
#
# The instrumentation is what `cargo fuzz` passes (SanitizerCoverage through LLVM flags that
# stable rustc accepts), without a sanitizer: cargo fuzz's ASan needs nightly. Rust's own
# checks (bounds, overflow, debug assertions) are on.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
shift || true
all=(peer_frames health_report config redis_info galera gluster_xml haproxy_state phpfpm_status)
targets=("${@:-${all[@]}}")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
echo "fuzz: building ${#targets[@]} targets (release, instrumented, $host)"
# --target keeps RUSTFLAGS off build scripts and proc macros.
cargo build --release --locked --target "$host" $(printf -- '--bin %s ' "${targets[@]}")
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  case $t in
    redis_info) seeds=(../tests/fixtures/redis) ;;
    galera) seeds=(../tests/fixtures/galera) ;;
    gluster_xml) seeds=(../tests/fixtures/gluster) ;;
    haproxy_state) seeds=(../tests/fixtures/haproxy) ;;
    phpfpm_status) seeds=(../tests/fixtures/phpfpm) ;;
    config) seeds=(../../systemd) ;;
    *) seeds=() ;;
  esac
  log=$(mktemp)
  set +e
  "$CARGO_TARGET_DIR/$host/release/$t" "corpus/$t" "${seeds[@]}" \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  if [ "$rc" -eq 0 ]; then
    printf 'fuzz: %-14s %4ss  %9s runs  %6s/s  cov %5s  0 crashes\n' "$t" "$seconds" "${runs:-?}" "${speed:-?}" "${cov:-?}"
  else
    failed=1
    crash=$(ls -t "artifacts/$t/" 2>/dev/null | head -1)
    echo "fuzz: $t FAILED (exit $rc); input: agent/fuzz/artifacts/$t/$crash"
    echo "fuzz: replay: $CARGO_TARGET_DIR/$host/release/$t agent/fuzz/artifacts/$t/$crash"
    grep -E "panicked|ERROR|SUMMARY" "$log" | head -10
  fi
  rm -f "$log"
done
exit $failed
