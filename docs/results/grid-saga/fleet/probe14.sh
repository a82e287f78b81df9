#!/bin/bash
# Probe 14 (h-fleet): 2x checks of the cells that held without one: swe at the full KV, 0.17/s (1,280 tasks);
# on 16 x llama3-70b-tp4-h100 webarena at 67,744 tokens, 1.0/s (1,280) and swe at the full KV, 0.35/s (640).
D=docs/results/grid-saga/fleet
python3 $D/cell.py --workload webarena --tasks 1280 --rate 1.0 --kv-scale 0.15 --profile llama3-70b-tp4-h100 \
  --label p14 --out $D/probe14.jsonl
python3 $D/cell.py --workload swe --tasks 640 --rate 0.35 --kv-scale 1.0 --profile llama3-70b-tp4-h100 \
  --label p14 --out $D/probe14.jsonl
