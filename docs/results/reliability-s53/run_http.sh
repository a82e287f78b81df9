#!/bin/sh
# Before/after over HTTP for the compaction link with `--workers N` (fifty-third session). BEFORE and AFTER:
# checkouts with their compiled modules (python3 setup.py build_ext --inplace).
# Usage: BEFORE=/tmp/snap53base AFTER=/work/main sh docs/results/reliability-s53/run_http.sh RUNS
set -u
here=$(cd "$(dirname "$0")" && pwd)
runs=${1:-2}
mkdir -p /tmp/reviewR /tmp/reviewA
for run in $(seq 1 "$runs"); do
  for tree in $BEFORE $AFTER; do
    echo "== run $run, tree $tree"
    for workers in 2 1; do
      echo "-- review 3's r1: 12 agents compact at once, --workers $workers"
      python3 "$here/r1_compaction_workers.py" "$tree" 26010 "$workers" 2>&1 | tail -n 1
    done
    echo "-- 30 agents x 60 calls compacting every 10, 2 replicas, --workers 2"
    SAGA_TREE=$tree WORKERS=2 PORT=25400 python3 "$here/compaction_workers.py" 2>&1 | tail -n 1
  done
done
