#!/bin/bash
# Probe 6 (h-fleet): webarena seed 0, 640 tasks, 16 x llama3-70b-tp4-a100 with KV between the floor (0.06) and
# the full KV, across session-affinity's capacity: where is the cliff, and the bound just before it?
D=docs/results/grid-saga/fleet
for KR in "0.15 0.6" "0.15 0.9" "0.15 1.2" "0.3 1.2" "0.3 1.8"; do
  set -- $KR
  python3 $D/cell.py --workload webarena --tasks 640 --rate $2 --kv-scale $1 --label p6 --out $D/probe6.jsonl
done
