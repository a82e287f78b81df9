#!/bin/sh
# The fifty-second session's measurements after its review (each tree in turn, compiled):
# compaction (reliability-s52/compaction.py), agents under one key (reliability-s49/agents_one_key.py), 16
# clients under one key (reliability-s48/a/d04), and the first review's scripts (kept in reliability-s52/review/).
# Usage: BEFORE=/tmp/snapbase AFTER=/tmp/snapv2 sh docs/results/reliability-s52/run_after_review.sh RUNS
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)  # docs/
runs=${1:-2}
mkdir -p /tmp/reviewA /tmp/rev48a /tmp/rev49
for run in $(seq 1 "$runs"); do
  for tree in $BEFORE $AFTER; do
    echo "== run $run, SAGA_TREE=$tree $(date -u +%H:%M)"
    echo "-- compaction (30 agents naming no session, a summary asked every 10 calls, 2 tiny-cpu replicas)"
    SAGA_TREE=$tree python3 "$here/results/reliability-s52/compaction.py" 2>&1 | tail -n 1
    echo "-- agents under one key (12 agents x 8 calls, 2 replicas)"
    SAGA_TREE=$tree python3 "$here/results/reliability-s49/agents_one_key.py" 2>&1 | tail -n 1
    echo "-- d04 (16 clients, one prompt_cache_key, 2 replicas)"
    SAGA_TREE=$tree python3 "$here/results/reliability-s48/a/d04_one_named_session_one_replica.py" 2>&1 | tail -n 1
  done
done
