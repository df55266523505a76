#!/usr/bin/env bash
# Web tier benchmark on the lab (issue 17), under page requests through every node's HAProxy:
# kill -9 of one node's PHP-FPM pool per run: drained in every HAProxy (target <= 1 s),
# restarted by its agent and readmitted everywhere (target <= 5 s), failed requests through
# each HAProxy (target 0 with option redispatch).
#   tests/bench/web.sh [--runs N] [--mount-runs N]
# Mount runs: n3's FUSE client killed, or n3 cut for 8 s and healed: the time until its
# agent sees the mount healthy again (target <= 10 s), remounted by the agent if need be.
# Needs root; builds the release agent, and brings a lab up unless one is (tests/bench/on-lab.sh).
set -euo pipefail

exec "$(dirname "${BASH_SOURCE[0]}")/on-lab.sh" triad-web-bench "$@"
