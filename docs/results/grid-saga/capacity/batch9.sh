#!/bin/bash
# Batch 9 (eighth session, lead): prefix-load and continuum-ttl at seeds 1 and 2, as batch 4-7 ran them at
# seed 0: at SA's highest holding rate, and at `saga`'s highest holding rate and the grid step below it.
D=docs/results/grid-saga/capacity
C=docs/results/grid-saga/fleet/cell.py
run() {  # workload tasks kv-scale seed rate
  python3 $C --workload $1 --tasks $2 --kv-scale $3 --seed $4 --rate $5 --policies prefix-load,continuum-ttl \
    --no-reference --label cap-others --out $D/others.jsonl
}
for R in 0.06 0.07 0.08; do run mixed 640 0.35 1 $R; done
for R in 0.05 0.06 0.07; do run mixed 640 0.35 2 $R; done
for R in 0.04 0.06 0.07; do run swe 640 0.35 1 $R; done
for R in 0.04 0.05 0.06; do run swe 640 0.35 2 $R; done
for R in 0.6 0.7 0.75; do run webarena 1280 0.15 1 $R; done
for R in 0.65 0.7 0.75; do run webarena 1280 0.15 2 $R; done
