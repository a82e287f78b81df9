#!/bin/sh
# The forty-seventh session's fourth review (of the third's fixes and CORS, against 55d6301): each script
# prints DEFECT: or OK: lines. Usage: SAGA_TREE=<a compiled checkout> sh run.sh
cd "$(dirname "$0")"
for s in breaker_cut_all.py cors_admin.py cors_fast_refusals.py cors_policy_bypass.py supervisor_gap.py; do
    echo "## $s"; python3 "$s" 2>&1 | grep -E '^(DEFECT|OK|INCONCLUSIVE)'
done
