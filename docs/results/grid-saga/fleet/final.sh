#!/bin/bash
# Final cells (h-fleet): 16 x llama3-70b-tp4-a100, the four policies, at the highest rate per workload where
# session-affinity held in the probes, N and 2N tasks (the 2x-longer check). Usage: final.sh SEED
S=${1:-0}
D=docs/results/grid-saga/fleet
POL=session-affinity,prefix-load,continuum-ttl,saga
CELLS=${CELLS:-"swe:320:1.0:0.15 swe:640:1.0:0.15 mixed:320:1.0:0.15 mixed:640:1.0:0.15 webarena:640:1.0:1.5 \
  webarena:1280:1.0:1.5 webarena:640:0.15:0.6 webarena:1280:0.15:0.6"}
for WNKR in $CELLS; do
  IFS=: read -r -a A <<< "$WNKR"; set -- "${A[@]}"
  python3 $D/cell.py --workload $1 --tasks $2 --kv-scale $3 --rate $4 --seed $S --policies $POL \
    --label final-s$S --out $D/final.jsonl
done
