#!/bin/bash
# Probe 9 (h-fleet): 2x-longer checks on 16 x llama3-70b-tp4-a100, seed 0: webarena at the full KV (probe 5's
# 2.5/s held with 640 tasks) and at KV 0.15 (probe 7: 0.7/s held with 640 and collapsed with 1,280); mixed at
# the full KV with 640 tasks.
D=docs/results/grid-saga/fleet
for WNKR in "webarena 1280 1.0 2.5"; do  # the rest (3.0/s, KV 0.15, mixed) moved to final.sh after 2.5/s did not hold
  set -- $WNKR
  python3 $D/cell.py --workload $1 --tasks $2 --kv-scale $3 --rate $4 --label p9 --out $D/probe9.jsonl
done
