#!/bin/bash
# Probe 2 (h-fleet): as probe 1 at higher rates, 320 tasks: where does session-affinity stop keeping up at the
# full KV?
D=docs/results/grid-saga/fleet
for R in 0.2 0.3 0.4; do
  python3 $D/cell.py --workload swe --tasks 320 --rate $R --kv-scale 1.0 --label p2 --out $D/probe2.jsonl
done
