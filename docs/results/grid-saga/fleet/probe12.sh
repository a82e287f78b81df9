#!/bin/bash
# Probe 12 (h-fleet): llama3-8b-h100, webarena seed 0. The 64-GPU fleet at the full KV at 8 tasks/s (4x probe
# 10's 2/s on 16 replicas, which held), 2,560 and 5,120 tasks; and on 16 replicas at KV 0.1 (43k tokens,
# ~3 webarena contexts per replica) to see whether the cliff of the 70B runs is there too.
D=docs/results/grid-saga/fleet
P="--profile llama3-8b-h100 --workload webarena"
python3 $D/cell.py $P --replicas 16 --tasks 640 --kv-scale 0.1 --rate 1 --label p12 --out $D/probe12.jsonl
python3 $D/cell.py $P --replicas 16 --tasks 640 --kv-scale 0.1 --rate 2 --label p12 --out $D/probe12.jsonl
python3 $D/cell.py $P --replicas 64 --tasks 2560 --rate 8 --label p12 --out $D/probe12.jsonl
python3 $D/cell.py $P --replicas 64 --tasks 5120 --rate 8 --label p12 --out $D/probe12.jsonl
