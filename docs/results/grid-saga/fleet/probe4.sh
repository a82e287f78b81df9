#!/bin/bash
# Probe 4 (h-fleet): swe seed 0 at the full KV near session-affinity's open-loop capacity, with the 2x-longer
# check (320 vs 640 tasks: the 640 repeat the 320's arrivals first). 640 x 0.2 collapsed (bound 2.76, the last
# quarter's TCT 4.8x the first's), so the capacity is below 0.2; the 0.25 runs were dropped.
D=docs/results/grid-saga/fleet
for NR in "640 0.2" "320 0.15" "640 0.15" "640 0.17"; do
  set -- $NR
  [ "$1 $2" = "640 0.2" ] && continue  # ran first (probe4.jsonl line 1)
  python3 $D/cell.py --workload swe --tasks $1 --rate $2 --kv-scale 1.0 --label p4 --out $D/probe4.jsonl
done
