#!/bin/bash
# Batch 2 (h-capacity): seed 0 on 16 x llama3-70b-tp4-a100. swe at 158,064 tokens with 640 tasks for both
# policies (the fleet section had SA's 0.05 with 320 tasks only, and no `saga` rate that failed); webarena at
# 67,744 tokens (--kv-scale 0.15) with 1,280 tasks (at 640, SA's 0.7 held and then fell behind with 1,280) on a
# grid of 0.05 tasks/s: SA from 0.65, `saga` from 0.75.
D=docs/results/grid-saga/capacity
python3 $D/bisect.py --workload swe --kv-scale 0.35 --seed 0 --tasks 640 --policy saga --start 0.07 --out $D/swe.jsonl
python3 $D/bisect.py --workload swe --kv-scale 0.35 --seed 0 --tasks 640 --policy session-affinity --start 0.05 \
  --out $D/swe.jsonl
python3 $D/bisect.py --workload webarena --kv-scale 0.15 --seed 0 --tasks 1280 --policy session-affinity \
  --start 0.65 --step 0.05 --out $D/webarena.jsonl
python3 $D/bisect.py --workload webarena --kv-scale 0.15 --seed 0 --tasks 1280 --policy saga \
  --start 0.75 --step 0.05 --out $D/webarena.jsonl
