#!/bin/sh
# The tenants' fair order with `--workers 2` (docs/results/reliability.md, "The tenants' order over every
# worker: tried, reverted"): its two reproductions, then the fifth review's workers items (their turns must
# still hold), each run twice on this tree; prints DEFECT while present (the two reproductions do on main:
# the change they were written for, 6d47bf6, was reverted; run-after.txt is its output on that change).
# Usage: sh docs/results/reliability-s41/run.sh > docs/results/reliability-s41/run-after.txt
# (SAGA_ROOT=/another/tree runs that tree's proxy: the lib's variable)
set -e
here="$(cd "$(dirname "$0")" && pwd)"
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), the proxy of ${SAGA_ROOT:-$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- "$here/../../.." || echo ' + working tree')}, $(nproc) cores"
for repro in repro_workers_tenant_share.py repro_workers_tenant_share_admission.py; do
    for run in 1 2; do
        echo "## $repro, run $run"
        timeout 300 python3 "$here/$repro" 2>&1 | tail -3
    done
done
if [ -z "$SKIP_S40" ]; then
    sh "$here/../reliability-s40/run.sh" | tail -n +2
fi
