#!/bin/bash
# Batch 6 (h-capacity): mixed, seed 0, 640 tasks, 158,064 tokens: batch 3 on a grid of 0.01 (SA held 0.06 and
# not 0.08, `saga` 0.1 and not 0.12), then prefix-load and continuum-ttl at SA's 0.06 and `saga`'s 0.1.
D=docs/results/grid-saga/capacity
C=docs/results/grid-saga/fleet/cell.py
python3 $D/bisect.py --workload mixed --kv-scale 0.35 --seed 0 --tasks 640 --policy session-affinity \
  --start 0.07 --out $D/mixed.jsonl
python3 $D/bisect.py --workload mixed --kv-scale 0.35 --seed 0 --tasks 640 --policy saga --start 0.11 \
  --out $D/mixed.jsonl
for R in 0.06 0.1; do
  python3 $C --workload mixed --tasks 640 --kv-scale 0.35 --rate $R --policies prefix-load,continuum-ttl \
    --no-reference --label cap-others --out $D/others.jsonl
done
