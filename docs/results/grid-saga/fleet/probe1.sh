#!/bin/bash
# Probe 1 (h-fleet): 16 x llama3-70b-tp4-a100, swe seed 0, 160 tasks, full KV, open-loop rates around the
# grid's full-KV saturation (0.0922 tasks/s): does session-affinity keep up, and what is the bound there?
D=docs/results/grid-saga/fleet
for R in 0.0783 0.11 0.15; do
  python3 $D/cell.py --workload swe --tasks 160 --rate $R --kv-scale 1.0 --label p1 --out $D/probe1.jsonl
done
