#!/bin/bash
# Seeds 1 and 2 of the full-KV cells of final.sh (the one configuration with all three workloads), N and 2N.
D=docs/results/grid-saga/fleet
for S in 1 2; do
  CELLS="swe:320:1.0:0.15 mixed:320:1.0:0.15 webarena:640:1.0:1.5 swe:640:1.0:0.15 mixed:640:1.0:0.15 \
    webarena:1280:1.0:1.5" bash $D/final.sh $S
done
