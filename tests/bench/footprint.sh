#!/usr/bin/env bash
# Agent footprint in the running lab (not a test): for each node's triad agent, the CPU share
# of one core over a window and the peak resident set size (VmHWM), with every probe of the
# lab's agent config running at its configured interval. The CPU of the short-lived gluster CLI
# processes the agent runs is shown separately. Measure the release build:
#   TRIAD_BIN=$PWD/target/release/triad tests/lab up   (after cargo build --release -p triad)
#   tests/bench/footprint.sh [SECONDS]      (default 60; the lab must be up: tests/lab up)
# Targets: under 1% of a core and under 30 MB per agent. Also printed: the agent's context
# switches per second over all its threads (its wake-ups: what its CPU share is mostly made of,
# and unlike the share, the same on a faster or slower machine).
set -euo pipefail
secs="${1:-60}"
state="${TRIAD_LAB_DIR:-/tmp/triad-lab}/state.json"
[ -f "$state" ] || { echo "footprint: no lab at $state; start it with tests/lab up" >&2; exit 69; }
mapfile -t pids < <(python3 - "$state" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for n in sorted(d["nodes"], key=int):
    a = d["nodes"][n].get("agent")
    if a:
        print(n, a["pid"])
PY
)
[ ${#pids[@]} -gt 0 ] || { echo "footprint: no agents recorded in $state" >&2; exit 69; }
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
child_ticks() { awk '{print $16 + $17}' "/proc/$1/stat"; }
# Context switches of every thread of a process (threads that exit meanwhile are not counted).
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'; }
declare -A start cstart sstart
for entry in "${pids[@]}"; do
  set -- $entry
  [ -d "/proc/$2" ] || { echo "footprint: agent of node $1 (pid $2) is not running" >&2; exit 69; }
  start[$2]=$(ticks "$2")
  cstart[$2]=$(child_ticks "$2")
  sstart[$2]=$(switches "$2")
done
bin=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['spec']['triad_bin'])" "$state")
echo "measuring ${#pids[@]} agents ($bin) for ${secs}s ..."
for ((i = 0; i < secs; i += 10)); do
  sleep $(( secs - i < 10 ? secs - i : 10 ))
  echo "  ... $(( i + 10 < secs ? i + 10 : secs ))s"
done
printf '\n%-6s %-8s %-14s %-22s %-14s %-14s\n' NODE PID "CPU (% core)" "CHILDREN (% core)" "PEAK RSS (MB)" "WAKE-UPS (/s)"
worst_cpu=0; worst_rss=0
for entry in "${pids[@]}"; do
  set -- $entry
  t=$(( $(ticks "$2") - ${start[$2]} ))
  cpu=$(awk -v t="$t" -v hz="$hz" -v s="$secs" 'BEGIN{printf "%.2f", 100 * t / hz / s}')
  ct=$(( $(child_ticks "$2") - ${cstart[$2]} ))
  ccpu=$(awk -v t="$ct" -v hz="$hz" -v s="$secs" 'BEGIN{printf "%.2f", 100 * t / hz / s}')
  rss=$(awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$2/status")
  wake=$(awk -v n="$(( $(switches "$2") - ${sstart[$2]} ))" -v s="$secs" 'BEGIN{printf "%.0f", n / s}')
  printf '%-6s %-8s %-14s %-22s %-14s %-14s\n' "n$1" "$2" "$cpu" "$ccpu" "$rss" "$wake"
  worst_cpu=$(awk -v a="$worst_cpu" -v b="$cpu" 'BEGIN{print (b > a) ? b : a}')
  worst_rss=$(awk -v a="$worst_rss" -v b="$rss" 'BEGIN{print (b > a) ? b : a}')
done
echo
echo "worst agent: ${worst_cpu}% of a core (target < 1%), peak RSS ${worst_rss} MB (target < 30 MB)"
