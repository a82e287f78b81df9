#!/bin/bash
# Probe 11 (h-fleet): is probe 7's cliff (webarena, 16 x llama3-70b-tp4-a100, KV 0.15: 0.6/s holds, 0.7/s falls
# behind with 1,280 tasks) the same at seeds 1 and 2?
D=docs/results/grid-saga/fleet
for S in 1 2; do
  for NR in "640 0.6" "1280 0.6" "640 0.7" "1280 0.7"; do
    set -- $NR
    python3 $D/cell.py --workload webarena --tasks $1 --rate $2 --kv-scale 0.15 --seed $S --label p11 \
      --out $D/probe11.jsonl
  done
done
