#!/bin/bash
# Batch 7 (h-capacity): mixed, seed 0, 640 tasks, 158,064 tokens: both other baselines held SA's first guess
# (0.06, batch 6) and SA holds 0.07 (batch 6), so run them at 0.07 and 0.08 too.
D=docs/results/grid-saga/capacity
C=docs/results/grid-saga/fleet/cell.py
for R in 0.07 0.08; do
  python3 $C --workload mixed --tasks 640 --kv-scale 0.35 --rate $R --policies prefix-load,continuum-ttl \
    --no-reference --label cap-others --out $D/others.jsonl
done
# prefix-load held 0.08 (SA did not): its next rate.
python3 $C --workload mixed --tasks 640 --kv-scale 0.35 --rate 0.09 --policies prefix-load --no-reference \
  --label cap-others --out $D/others.jsonl
