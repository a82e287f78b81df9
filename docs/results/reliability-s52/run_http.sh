#!/bin/sh
# Before/after over HTTP for the conversations under one prompt_cache_key (fifty-second session): earlier
# reviews' scripts. BEFORE and AFTER: checkouts with their compiled modules (python3 setup.py build_ext
# --inplace). Review C's scripts (reliability-s49/c) run /tmp/snap49 then SAGA_TREE in one process: /tmp/snap49
# is made a link to BEFORE.
# Usage: BEFORE=/tmp/snapbase AFTER=/work/main sh docs/results/reliability-s52/run_http.sh RUNS
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)  # docs/
runs=${1:-2}
mkdir -p /tmp/reviewA /tmp/rev48a /tmp/rev49 /tmp/rev49c
if [ -d /tmp/snap49 ] && [ ! -L /tmp/snap49 ]; then mv /tmp/snap49 /tmp/snap49.old; fi
rm -f /tmp/snap49 && ln -s "$BEFORE" /tmp/snap49
for run in $(seq 1 "$runs"); do
  for tree in $BEFORE $AFTER; do
    echo "== run $run, SAGA_TREE=$tree"
    echo "-- agents under one key (12 agents x 8 calls, 2 replicas)"
    SAGA_TREE=$tree python3 "$here/results/reliability-s49/agents_one_key.py" 2>&1 | tail -n 1
    echo "-- d04 (16 clients, one prompt_cache_key, 2 replicas)"
    SAGA_TREE=$tree python3 "$here/results/reliability-s48/a/d04_one_named_session_one_replica.py" 2>&1 | tail -n 1
    echo "-- d02 (8 parallel calls of one session, 2 tiny-cpu replicas)"
    SAGA_TREE=$tree python3 "$here/results/reliability-s49/a/d02_parallel_calls_one_replica.py" 2>&1 | tail -n 1
  done
  for script in d01_completions_key_lost_after_retry d04_chat_dynamic_system_prompt_key_lost \
      d05_cache_key_dissolves_header_session d06_interrupted_stream_dissolves_key \
      d07_timeout_retry_dissolves_key check_chat_side_call; do
    echo "== run $run, review C $script: before=$BEFORE now=$AFTER"
    SAGA_TREE=$AFTER python3 "$here/results/reliability-s49/c/$script.py" 2>&1 | tail -n 1
  done
done
