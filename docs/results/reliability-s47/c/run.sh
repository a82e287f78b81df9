#!/bin/sh
# The forty-seventh session's third review (of the session's fixes, against cfa2261): each script prints
# DEFECT: or OK: lines. Usage: SAGA_TREE=<a compiled checkout> sh run.sh
cd "$(dirname "$0")"
for s in d*.py; do echo "## $s"; python3 "$s" 2>&1 | grep -E '^(DEFECT|OK|INCONCLUSIVE)'; done
