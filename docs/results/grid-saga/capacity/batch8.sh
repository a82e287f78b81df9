#!/bin/bash
# Batch 8 (eighth session, lead): mixed at seeds 1 and 2, 640 tasks, 158,064 tokens (seed 0: batch 6):
# session-affinity from its seed-0 rate, `saga` from its seed-0 rate, on the same 0.01 grid.
D=docs/results/grid-saga/capacity
for S in 1 2; do
  python3 $D/bisect.py --workload mixed --kv-scale 0.35 --seed $S --tasks 640 --policy session-affinity \
    --start 0.07 --out $D/mixed.jsonl
  python3 $D/bisect.py --workload mixed --kv-scale 0.35 --seed $S --tasks 640 --policy saga --start 0.1 \
    --out $D/mixed.jsonl
done
