#!/bin/sh
# The CPU a call costs in process, three rounds with each tree in turn: the tree before this session
# ($BEFORE, a git archive of 6a392af with its own mypyc build) against this checkout (compiled).
# Usage: BEFORE=/tmp/snap41 sh docs/results/overhead-s41/call_cost.sh > docs/results/overhead-s41/call-cost.txt
set -e
after="$(cd "$(dirname "$0")/../../.." && pwd)"
cmd="python3 -m loadtests.bench.call_cost --calls 50000 --repeats 1 --request plain --mode json,sse"
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): $cmd, three rounds, each tree in turn ($BEFORE, then $after at $(git -C "$after" rev-parse --short HEAD))"
for round in 1 2 3; do
    for tree in "$BEFORE" "$after"; do
        echo "$tree:"
        (cd "$tree" && PYTHONPATH="$tree" $cmd 2>&1 | grep 'µs/call')
    done
done
