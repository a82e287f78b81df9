#!/bin/sh
# vllm-router's cache_aware with its load-balance thresholds lowered to the live bench's scale
# (`vllm-router:cache_aware_balanced`), beside saga, session-affinity and the best peer of the headline runs
# (vllm-router's program scheduling): three runs of the headline's command with these routers.
# Usage: sh docs/results/saga-v41/live_balanced.sh  (writes live-balanced-run{1,2,3}.json and .txt here)
set -e
here="$(cd "$(dirname "$0")" && pwd)"
for run in 1 2 3; do
    python3 -m proxy.cli bench live --workload demo --tasks 48 --concurrency 48 --replicas 4 --kv-blocks 8000 \
        --time-scale 4 --routers saga:session-affinity,saga:saga,vllm-router:program,vllm-router:cache_aware_balanced \
        --baseline saga:session-affinity --json "$here/live-balanced-run$run.json" > "$here/live-balanced-run$run.txt" 2>&1
done
