#!/bin/bash
# Batch 10 (eighth session, lead): the 2x check of every highest holding rate: SA and `saga` each at its
# own highest holding rate (tables.md) with twice the tasks, to see that "holds" is a steady state.
D=docs/results/grid-saga/capacity
C=docs/results/grid-saga/fleet/cell.py
python3 $C --workload swe --tasks 1280 --kv-scale 0.35 --seed 0 --rate 0.06 --policies session-affinity --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload swe --tasks 1280 --kv-scale 0.35 --seed 0 --rate 0.08 --policies saga --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload swe --tasks 1280 --kv-scale 0.35 --seed 1 --rate 0.04 --policies session-affinity --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload swe --tasks 1280 --kv-scale 0.35 --seed 1 --rate 0.07 --policies saga --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload swe --tasks 1280 --kv-scale 0.35 --seed 2 --rate 0.04 --policies session-affinity --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload swe --tasks 1280 --kv-scale 0.35 --seed 2 --rate 0.06 --policies saga --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload webarena --tasks 2560 --kv-scale 0.15 --seed 0 --rate 0.65 --policies session-affinity --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload webarena --tasks 2560 --kv-scale 0.15 --seed 0 --rate 0.75 --policies saga --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload webarena --tasks 2560 --kv-scale 0.15 --seed 1 --rate 0.6 --policies session-affinity --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload webarena --tasks 2560 --kv-scale 0.15 --seed 1 --rate 0.75 --policies saga --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload webarena --tasks 2560 --kv-scale 0.15 --seed 2 --rate 0.65 --policies session-affinity --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload webarena --tasks 2560 --kv-scale 0.15 --seed 2 --rate 0.75 --policies saga --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload mixed --tasks 1280 --kv-scale 0.35 --seed 0 --rate 0.07 --policies session-affinity --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload mixed --tasks 1280 --kv-scale 0.35 --seed 0 --rate 0.1 --policies saga --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload mixed --tasks 1280 --kv-scale 0.35 --seed 1 --rate 0.06 --policies session-affinity --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload mixed --tasks 1280 --kv-scale 0.35 --seed 1 --rate 0.08 --policies saga --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload mixed --tasks 1280 --kv-scale 0.35 --seed 2 --rate 0.05 --policies session-affinity --no-reference --label cap-2x --out $D/double.jsonl
python3 $C --workload mixed --tasks 1280 --kv-scale 0.35 --seed 2 --rate 0.07 --policies saga --no-reference --label cap-2x --out $D/double.jsonl
