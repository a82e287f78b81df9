#!/bin/sh
# The forty-seventh session's fifth review (of the fourth's fixes, against 06ec9e2): each script prints
# DEFECT: or OK: lines. Usage: SAGA_TREE=<a compiled checkout> sh run.sh
cd "$(dirname "$0")"
for s in cors_expose_headers.py cors_metrics_readable.py supervisor_port_gap.py; do
    echo "## $s"; python3 "$s" 2>&1 | grep -E '^(DEFECT|OK|INCONCLUSIVE)'
done
