#!/bin/bash
# Probe 5 (h-fleet): webarena and mixed, seed 0, 16 x llama3-70b-tp4-a100 at the full KV: session-affinity's
# open-loop capacity and the bound near it (the grid's closed-loop saturations: webarena 1.48, mixed 0.071).
D=docs/results/grid-saga/fleet
for WNR in "webarena 640 1.5" "webarena 640 2.5" "mixed 320 0.1" "mixed 320 0.15"; do
  set -- $WNR
  python3 $D/cell.py --workload $1 --tasks $2 --rate $3 --kv-scale 1.0 --label p5 --out $D/probe5.jsonl
done
