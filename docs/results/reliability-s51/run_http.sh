#!/bin/sh
# Before/after over HTTP for the spill (fifty-first session): the reviews' scripts, each tree in turn.
# BEFORE and AFTER: checkouts with their compiled modules (python3 setup.py build_ext --inplace).
# Usage: BEFORE=/tmp/snap55 AFTER=/work/main sh docs/results/reliability-s51/run_http.sh RUNS
# (TREES="DIR ..." runs those trees alone instead)
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)  # docs/
runs=${1:-2}
mkdir -p /tmp/reviewA /tmp/rev48a /tmp/rev49
for run in $(seq 1 "$runs"); do
  for tree in ${TREES:-$BEFORE $AFTER}; do
    echo "== run $run, SAGA_TREE=$tree"
    echo "-- d02 (8 parallel calls of one session, 2 tiny-cpu replicas)"
    SAGA_TREE=$tree python3 "$here/results/reliability-s49/a/d02_parallel_calls_one_replica.py" 2>&1 | tail -n 3
    echo "-- d04 (16 clients, one prompt_cache_key, 2 replicas)"
    SAGA_TREE=$tree python3 "$here/results/reliability-s48/a/d04_one_named_session_one_replica.py" 2>&1 | tail -n 1
    echo "-- agents under one key (12 agents x 8 calls, 2 replicas)"
    SAGA_TREE=$tree python3 "$here/results/reliability-s49/agents_one_key.py" 2>&1 | tail -n 1
  done
done
