#!/usr/bin/env bash
# A three-node Triad agent cluster on loopback, from tests/local/node{1,2,3}.toml.
#   cluster.sh up            build triad, start the three agents, wait for a leader
#   cluster.sh status        triad status through node 1 (or the first that answers)
#   cluster.sh kill N        kill -9 node N        cluster.sh stop N   SIGTERM node N
#   cluster.sh start N       start node N again    cluster.sh down     stop all, keep data
#   cluster.sh clean         down, then delete the data directories
# State and logs live in /tmp/triad-local/ (nN/ data, nN.log, nN.pid).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
run_dir=/tmp/triad-local
bin="$root/target/debug/triad"

die() { echo "cluster.sh: $*" >&2; exit 1; }
pid_of() { [ -f "$run_dir/n$1.pid" ] && cat "$run_dir/n$1.pid" || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null; }
check_node() { case "${1:-}" in 1|2|3) ;; *) die "node must be 1, 2 or 3 (got '${1:-}')";; esac; }

start_node() {
  local n=$1
  if alive "$n"; then echo "node $n already running (pid $(pid_of "$n"))"; return; fi
  mkdir -p "$run_dir"
  "$bin" run --config "$here/node$n.toml" --data-dir "$run_dir/n$n" >>"$run_dir/n$n.log" 2>&1 &
  echo $! >"$run_dir/n$n.pid"
  echo "node $n started (pid $!, log $run_dir/n$n.log)"
}

signal_node() {
  local n=$1 sig=$2 p
  p=$(pid_of "$n")
  if ! alive "$n"; then echo "node $n is not running"; return; fi
  kill "-$sig" "$p"
  for _ in $(seq 1 100); do alive "$n" || break; sleep 0.1; done
  alive "$n" && die "node $n (pid $p) still running after SIG$sig"
  rm -f "$run_dir/n$n.pid"
  echo "node $n stopped (SIG$sig)"
}

wait_leader() {
  local t0=$SECONDS
  while (( SECONDS - t0 < 15 )); do
    for n in 1 2 3; do
      if curl -sf "http://127.0.0.1:710$n/ready" >/dev/null 2>&1; then
        echo "leader elected after $(( SECONDS - t0 ))s"; return 0
      fi
    done
    sleep 0.1
  done
  die "no leader within 15s; see $run_dir/n*.log"
}

case "${1:-}" in
  up)
    t0=$SECONDS
    echo "building triad..."
    (cd "$root" && cargo build -q -p triad --bin triad)
    echo "built in $(( SECONDS - t0 ))s"
    if [ ! -f "$here/tls/ca.crt" ]; then
      echo "making the cluster's certificates in $here/tls..."
      "$bin" cert init --dir "$here/tls" --cluster triad-local --days 3650 >/dev/null
      for n in 1 2 3; do
        "$bin" cert issue --dir "$here/tls" --cluster triad-local --node "$n" --days 3650 >/dev/null
      done
    fi
    chmod 600 "$here/token"   # a secret file: the agent refuses one others can read
    for n in 1 2 3; do start_node "$n"; done
    wait_leader
    "$bin" status --api 127.0.0.1:7101 || true
    echo
    echo "look:   $bin status --api 127.0.0.1:7101"
    echo "break:  $0 kill 1    (then: $0 start 1)"
    echo "stop:   $0 down"
    ;;
  status) "$bin" status --api 127.0.0.1:7101 2>/dev/null || "$bin" status --api 127.0.0.1:7102 2>/dev/null || "$bin" status --api 127.0.0.1:7103 ;;
  kill) check_node "${2:-}"; signal_node "$2" KILL ;;
  stop) check_node "${2:-}"; signal_node "$2" TERM ;;
  start) check_node "${2:-}"; [ -x "$bin" ] || die "build first: $0 up"; start_node "$2" ;;
  down) for n in 1 2 3; do signal_node "$n" TERM; done ;;
  clean) for n in 1 2 3; do signal_node "$n" TERM; done; rm -rf "$run_dir"; echo "removed $run_dir" ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 64 ;;
esac
