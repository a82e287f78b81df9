#!/bin/bash
# Batch 1 (h-capacity): swe at 158,064 KV tokens per replica (--kv-scale 0.35 of 451,648) on
# 16 x llama3-70b-tp4-a100, 640 tasks, seeds 1 and 2: the highest rate SA and `saga` each hold, on a grid
# of 0.01 tasks/s from the seed-0 answers (SA 0.05, `saga` 0.07).
D=docs/results/grid-saga/capacity
for S in 1 2; do
  python3 $D/bisect.py --workload swe --kv-scale 0.35 --seed $S --tasks 640 --policy saga --start 0.07 \
    --out $D/swe.jsonl
  python3 $D/bisect.py --workload swe --kv-scale 0.35 --seed $S --tasks 640 --policy session-affinity \
    --start 0.05 --out $D/swe.jsonl
done
