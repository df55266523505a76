#!/usr/bin/env bash
# Redis failover benchmark on the lab (not a test): Triad against Redis Sentinel, kill -9 of
# the master, time until a write succeeds through every node's HAProxy (p50/p99/max, ratio,
# spurious second failovers), and the partition case with lost acknowledged writes.
#   tests/bench/failover.sh [--runs N] [--hung-runs N] [--partition-runs N] [--skip-sentinel]
# Needs root; builds the release agent, and brings a lab up unless one is (tests/bench/on-lab.sh).
set -euo pipefail

exec "$(dirname "${BASH_SOURCE[0]}")/on-lab.sh" triad-failover-bench "$@"
