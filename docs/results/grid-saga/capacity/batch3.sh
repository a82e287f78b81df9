#!/bin/bash
# Batch 3 (h-capacity): mixed, seed 0, 640 tasks, at 158,064 tokens per replica (--kv-scale 0.35, where swe
# has SA's cliff at 0.04-0.05 tasks/s; mixed holds 0.15 at the full KV): SA's and `saga`'s highest rates on a
# grid of 0.02 tasks/s.
D=docs/results/grid-saga/capacity
python3 $D/bisect.py --workload mixed --kv-scale 0.35 --seed 0 --tasks 640 --policy session-affinity \
  --start 0.08 --step 0.02 --out $D/mixed.jsonl
python3 $D/bisect.py --workload mixed --kv-scale 0.35 --seed 0 --tasks 640 --policy saga \
  --start 0.1 --step 0.02 --out $D/mixed.jsonl
