#!/bin/bash
# Probe 14b (h-fleet), beside probe 14: swe at the full KV, 0.17/s, 1,280 tasks (2x of probe 4's 640).
D=docs/results/grid-saga/fleet
python3 $D/cell.py --workload swe --tasks 1280 --rate 0.17 --kv-scale 1.0 --label p14 --out $D/probe14.jsonl
