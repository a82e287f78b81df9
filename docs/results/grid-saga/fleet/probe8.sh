#!/bin/bash
# Probe 8 (h-fleet): 16 x llama3-70b-tp4-h100 (the same KV, faster compute), seed 0: webarena 640 tasks and swe
# 320 at the full KV and at a KV that binds, below and above session-affinity's capacity.
D=docs/results/grid-saga/fleet
P=llama3-70b-tp4-h100
for WNKR in "webarena 640 1.0 3.0" "webarena 640 1.0 4.5" "webarena 640 0.15 1.0" "webarena 640 0.15 1.4" "swe 320 1.0 0.25" "swe 320 1.0 0.35"; do
  set -- $WNKR
  python3 $D/cell.py --profile $P --workload $1 --tasks $2 --kv-scale $3 --rate $4 --label p8 --out $D/probe8.jsonl
done
