#!/bin/bash
# Probe 7 (h-fleet): webarena seed 0, KV 0.15 of the full (67,744 tokens per replica): the rates between
# probe 6's steady 0.6 and collapsed 0.9, 640 tasks and the 2x-longer check with 1,280.
D=docs/results/grid-saga/fleet
for NR in "640 0.7" "640 0.8" "1280 0.7" "1280 0.8"; do
  set -- $NR
  python3 $D/cell.py --workload webarena --tasks $1 --rate $2 --kv-scale 0.15 --label p7 --out $D/probe7.jsonl
done
