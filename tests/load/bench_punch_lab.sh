#!/usr/bin/env bash
# Benchmark: `mm punch` through real NATs in the network-namespace lab of
# tests/e2e/lab.py: MMLOAD_PUNCH_RUNS (50) punches from c1 (behind r1) to
# c2 (behind r2), both endpoint-independent NATs with a home router's
# firewall, without loss and with MMLOAD_PUNCH_LOSS (30) % loss on r1.
# Prints per case the success rate, p50/p95 of the agent's time_ms and of
# the mm process's wall time, and the load average (tests/load/bench_punch_lab.py
# does the work and says more).
#
#   tests/load/bench_punch_lab.sh        (or: make bench, tests/load/run-all.sh punch)
#
# Needs root (network namespaces, iptables, nft); prints "skipped: REASON"
# and exits 0 where the lab cannot be built.
# Knobs: MMLOAD_PUNCH_RUNS, MMLOAD_PUNCH_LOSS, MMLOAD_KEEP=1, MM_BUILD_DIR, PYTHON (/usr/bin/python3).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/load/lib.sh
. "$here/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
    echo "bench_punch_lab: skipped: the NAT lab needs root (network namespaces, iptables, nft)"
    exit 0
fi
load_build mm mm-tracker mm-gateway mm-signal
load_log "machine: $(load_machine); load average $(load_loadavg); $(load_source)"
MM_BUILD_DIR=${MM_BUILD_DIR:-$LOAD_ROOT/build} exec "${PYTHON:-/usr/bin/python3}" "$here/bench_punch_lab.py" "$@"
