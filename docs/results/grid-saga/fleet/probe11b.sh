#!/bin/bash
# Probe 11, the cells that did not run at 14:18 (the script then imported /work/main's modules, whose compiled
# build had gone stale; cell.py now imports its own tree).
D=docs/results/grid-saga/fleet
for SNR in "1 640 0.7" "1 1280 0.7" "2 640 0.6" "2 1280 0.6" "2 640 0.7" "2 1280 0.7"; do
  set -- $SNR
  python3 $D/cell.py --workload webarena --tasks $2 --rate $3 --kv-scale 0.15 --seed $1 --label p11 \
    --out $D/probe11.jsonl
done
