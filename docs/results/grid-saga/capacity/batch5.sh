#!/bin/bash
# Batch 5 (h-capacity): prefix-load, the other baseline that held at SA's rate (batch 4), at the rate between
# SA's and `saga`'s, seed 0: swe 0.07 (640 tasks), webarena 0.7 (1,280 tasks). Then batch 3 (mixed).
D=docs/results/grid-saga/capacity
C=docs/results/grid-saga/fleet/cell.py
P="--policies prefix-load --no-reference --label cap-others"
python3 $C --workload swe --tasks 640 --kv-scale 0.35 --rate 0.07 $P --out $D/others.jsonl
python3 $C --workload webarena --tasks 1280 --kv-scale 0.15 --rate 0.7 $P --out $D/others.jsonl
bash $D/batch3.sh
