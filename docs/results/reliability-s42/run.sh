#!/bin/sh
# The ninth review's reproductions (docs/results/reliability.md, "A ninth review"), each once, against the
# tree SAGA_ROOT names (default: this checkout); each prints DEFECT or OK as its last line.
# Usage: [SAGA_ROOT=/path/to/tree] sh docs/results/reliability-s42/run.sh
cd "$(dirname "$0")" || exit 1
echo "# $(date -u +%FT%TZ) tree ${SAGA_ROOT:-$(cd ../../.. && pwd)} at $(git -C "${SAGA_ROOT:-../../..}" rev-parse --short HEAD 2>/dev/null)"
for t in t1_metrics_big_stall t2_slow_metrics_down t3_hung_peer_delays_recovery t4_kv_flood_memory t5_models_big; do
    echo "## $t"
    timeout 300 python3 "$t.py" 2>&1 | tail -4
done
