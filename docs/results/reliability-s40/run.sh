#!/bin/sh
# The fourth review's items left with `--workers` (docs/results/reliability.md, "A fifth adversarial review,
# and the fourth's release queue with workers closed"): its reproductions, each run twice on this tree;
# prints DEFECT while present.
# Usage: sh docs/results/reliability-s40/run.sh > docs/results/reliability-s40/run-after-fixes.txt
# (SAGA_ROOT=/another/tree runs that tree's proxy: the lib's variable)
set -e
cd "$(dirname "$0")/../reliability-s39"
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), the proxy of ${SAGA_ROOT:-$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- ../../.. || echo ' + working tree')}, $(nproc) cores"
for repro in repro_workers_queue_starves_other_workers_tenant.py repro_workers_queue_never_active_min_tenants.py \
    repro_workers_queue_bound_per_worker.py repro_workers_admission_starves_other_worker.py; do
    for run in 1 2; do
        echo "## $repro, run $run"
        timeout 300 python3 "$repro" 2>&1 | tail -3
    done
done
