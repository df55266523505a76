#!/usr/bin/env bash
# Backup benchmark on the lab (not a test), issue 15: per run, an insert load through every
# node's HAProxy, idle first, then during `triad backup now`; prints the backup's duration
# and size per component and the insert latency p50/p99 idle against during the backup
# (target: p99 during a backup <= 1.5x idle).
#   tests/bench/backup.sh [--runs N] [--data-mb M] [--idle-secs S]
# Needs root; builds the release agent, and brings a lab up unless one is (tests/bench/on-lab.sh).
set -euo pipefail

exec "$(dirname "${BASH_SOURCE[0]}")/on-lab.sh" triad-backup-bench "$@"
