#!/bin/bash
# Probe 13 (h-fleet): the 2x check of probe 3's swe cell at 158,064 tokens per replica and 0.07 tasks/s, where
# SA fell behind and `saga` held with 320 tasks: does `saga` still hold with 640?
D=docs/results/grid-saga/fleet
python3 $D/cell.py --workload swe --tasks 640 --rate 0.07 --kv-scale 0.35 --label p13 --out $D/probe13.jsonl
