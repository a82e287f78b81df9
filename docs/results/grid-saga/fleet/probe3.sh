#!/bin/bash
# Probe 3 (h-fleet): swe seed 0, 320 tasks, KV between the floor (0.264) and the full KV: session-affinity's
# open-loop capacity and the bound at each. (The first try, 0.5 x 0.12, collapsed: see probe3.jsonl.)
D=docs/results/grid-saga/fleet
for KR in "0.5 0.06" "0.5 0.09" "0.35 0.05" "0.35 0.07"; do
  set -- $KR
  python3 $D/cell.py --workload swe --tasks 320 --rate $2 --kv-scale $1 --label p3 --out $D/probe3.jsonl
done
