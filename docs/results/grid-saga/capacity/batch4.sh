#!/bin/bash
# Batch 4 (h-capacity): the other two baselines, seed 0, at SA's highest holding rate and at `saga`'s (batches
# 1-2): swe at 158,064 tokens (0.06 and 0.08 tasks/s, 640 tasks) and webarena at 67,744 tokens (0.65 and 0.75,
# 1,280 tasks). Then webarena seeds 1 and 2 on batch 2's grid (SA from 0.65, `saga` from 0.75).
D=docs/results/grid-saga/capacity
C=docs/results/grid-saga/fleet/cell.py
P="--policies prefix-load,continuum-ttl --no-reference --label cap-others"
for R in 0.06 0.08; do
  python3 $C --workload swe --tasks 640 --kv-scale 0.35 --rate $R $P --out $D/others.jsonl
done
for R in 0.65 0.75; do
  python3 $C --workload webarena --tasks 1280 --kv-scale 0.15 --rate $R $P --out $D/others.jsonl
done
for S in 1 2; do
  python3 $D/bisect.py --workload webarena --kv-scale 0.15 --seed $S --tasks 1280 --policy session-affinity \
    --start 0.65 --step 0.05 --out $D/webarena.jsonl
  python3 $D/bisect.py --workload webarena --kv-scale 0.15 --seed $S --tasks 1280 --policy saga \
    --start 0.75 --step 0.05 --out $D/webarena.jsonl
done
