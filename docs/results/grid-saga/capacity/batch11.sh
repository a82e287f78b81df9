#!/bin/bash
# Batch 11 (eighth session, lead): capacity at twice the tasks. Batch 10 ran each policy at its highest
# holding rate with 2x tasks; most did not hold. Bisect each policy again at 2x tasks, from that rate (reused).
D=docs/results/grid-saga/capacity
python3 $D/bisect.py --workload swe --kv-scale 0.35 --seed 0 --tasks 1280 --policy session-affinity --start 0.06 --step 0.01 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload swe --kv-scale 0.35 --seed 0 --tasks 1280 --policy saga --start 0.08 --step 0.01 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload swe --kv-scale 0.35 --seed 1 --tasks 1280 --policy session-affinity --start 0.04 --step 0.01 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload swe --kv-scale 0.35 --seed 1 --tasks 1280 --policy saga --start 0.07 --step 0.01 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload swe --kv-scale 0.35 --seed 2 --tasks 1280 --policy session-affinity --start 0.04 --step 0.01 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload swe --kv-scale 0.35 --seed 2 --tasks 1280 --policy saga --start 0.06 --step 0.01 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload webarena --kv-scale 0.15 --seed 0 --tasks 2560 --policy session-affinity --start 0.65 --step 0.05 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload webarena --kv-scale 0.15 --seed 0 --tasks 2560 --policy saga --start 0.75 --step 0.05 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload webarena --kv-scale 0.15 --seed 1 --tasks 2560 --policy session-affinity --start 0.6 --step 0.05 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload webarena --kv-scale 0.15 --seed 1 --tasks 2560 --policy saga --start 0.75 --step 0.05 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload webarena --kv-scale 0.15 --seed 2 --tasks 2560 --policy session-affinity --start 0.65 --step 0.05 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload webarena --kv-scale 0.15 --seed 2 --tasks 2560 --policy saga --start 0.75 --step 0.05 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload mixed --kv-scale 0.35 --seed 0 --tasks 1280 --policy session-affinity --start 0.07 --step 0.01 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload mixed --kv-scale 0.35 --seed 0 --tasks 1280 --policy saga --start 0.1 --step 0.01 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload mixed --kv-scale 0.35 --seed 1 --tasks 1280 --policy session-affinity --start 0.06 --step 0.01 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload mixed --kv-scale 0.35 --seed 1 --tasks 1280 --policy saga --start 0.08 --step 0.01 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload mixed --kv-scale 0.35 --seed 2 --tasks 1280 --policy session-affinity --start 0.05 --step 0.01 --max-runs 4 --out $D/double.jsonl
python3 $D/bisect.py --workload mixed --kv-scale 0.35 --seed 2 --tasks 1280 --policy saga --start 0.07 --step 0.01 --max-runs 4 --out $D/double.jsonl
