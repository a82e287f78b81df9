#!/bin/sh
# The eleventh review's reproductions (docs/results/reliability.md, "An eleventh review"), each once, against
# the tree SAGA_ROOT names (default: this checkout); each prints DEFECT or OK last. The discovery scripts run
# in a private mount namespace (ns_run.sh: needs root).
# Usage: [SAGA_ROOT=/path/to/tree] sh docs/results/reliability-s42/run_eleventh.sh
cd "$(dirname "$0")" || exit 1
echo "# $(date -u +%FT%TZ) tree ${SAGA_ROOT:-$(cd ../../.. && pwd)} at $(git -C "${SAGA_ROOT:-../../..}" rev-parse --short HEAD 2>/dev/null)"
for args in "d1_removed_comes_back.py configured" "d1_removed_comes_back.py admin" "d2_workers_undrain_restart.py"; do
    echo "## $args"
    sh ns_run.sh $args 2>&1 | tail -2
done
for args in "h1_nocap_slow_metrics.py nocap" "h1_nocap_slow_metrics.py cap" "h2_capacity_lost_after_call_failure.py fail" "h2_capacity_lost_after_call_failure.py control" "k1_shared_prefix_both_lose.py"; do
    echo "## $args"
    timeout 90 python3 $args 2>&1 | tail -3
done
# the twelfth review's (docs/results/reliability.md, "A twelfth review")
for args in "x1_readd_discovered.py single" "x1_readd_discovered.py workers" "x2_blip_removed.py single" "x2_blip_removed.py workers"; do
    echo "## $args"
    sh ns_run.sh $args 2>&1 | tail -2
done
for args in "h3_startup_unknown.py case" "h3_startup_unknown.py control" "k5_lead_cost.py"; do
    echo "## $args"
    timeout 90 python3 $args 2>&1 | tail -4
done
