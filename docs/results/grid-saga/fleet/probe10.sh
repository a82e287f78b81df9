#!/bin/bash
# Probe 10 (h-fleet): llama3-8b-h100 (430k KV tokens per GPU), webarena seed 0, first on 16 replicas (a quarter
# of the 64-GPU fleet, to find session-affinity's capacity cheaply), 640 tasks, full KV.
D=docs/results/grid-saga/fleet
for R in 2 4 6; do
  python3 $D/cell.py --profile llama3-8b-h100 --replicas 16 --workload webarena --tasks 640 --rate $R \
    --label p10 --out $D/probe10.jsonl
done
