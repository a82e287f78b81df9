#!/bin/sh
# unknown_routes_memory.py twice each for `GET /v1/x` and `POST /health`, on $BEFORE (a tree before the fix,
# compiled) and on this checkout (compiled).
# Usage: BEFORE=/tmp/snap41b sh docs/results/reliability-s41/unknown_routes_memory.sh > docs/results/reliability-s41/unknown-routes-memory.txt
here="$(cd "$(dirname "$0")" && pwd)"
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores"
for tree in "$BEFORE" "$(cd "$here/../../.." && pwd)"; do
    echo "## $tree ($(git -C "$tree" rev-parse --short HEAD 2>/dev/null || echo 'a git archive of 0807b96'))"
    for run in 1 2; do
        SAGA_ROOT="$tree" python3 "$here/unknown_routes_memory.py" GET /v1/x
        SAGA_ROOT="$tree" python3 "$here/unknown_routes_memory.py" POST /health
    done
done
