#!/bin/sh
# The forty-seventh session's second review (real client SDKs through the proxy): each script prints DEFECT:
# or OK: lines. Usage: SAGA_TREE=<a compiled checkout> sh run.sh
cd "$(dirname "$0")"
for s in d*.py; do echo "## $s"; python3 "$s" 2>&1 | grep -E '^(DEFECT|OK|INCONCLUSIVE)'; done
