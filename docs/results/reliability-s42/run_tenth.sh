#!/bin/sh
# The tenth review's reproductions (docs/results/reliability.md, "A tenth review"), each once, against the
# tree SAGA_ROOT names (default: this checkout); each prints DEFECT or OK last. The discovery scripts run in
# a private mount namespace (ns_run.sh: needs root).
# Usage: [SAGA_ROOT=/path/to/tree] sh docs/results/reliability-s42/run_tenth.sh
cd "$(dirname "$0")" || exit 1
echo "# $(date -u +%FT%TZ) tree ${SAGA_ROOT:-$(cd ../../.. && pwd)} at $(git -C "${SAGA_ROOT:-../../..}" rev-parse --short HEAD 2>/dev/null)"
for t in t_stale_load t_unknown_vars t_workers_tenant_drop; do
    echo "## $t"
    timeout 120 python3 "$t.py" 500 2>&1 | tail -3
done
for t in a1_static_removed a2_drain_flap a3_workers_restart_undrains; do
    echo "## $t"
    sh ns_run.sh "$t.py" 2>&1 | tail -2
done
for t in b1_shared_block b3_capacity_stale b4_restart_stale; do
    echo "## $t"
    timeout 90 python3 "$t.py" 2>&1 | tail -2
done
