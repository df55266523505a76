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
# Needs root; builds the release agent, and brings a lab up unless one is (tests/bench/on-lab.sh).
set -euo pipefail

exec "$(dirname "${BASH_SOURCE[0]}")/on-lab.sh" triad-galera-bench "$@"
