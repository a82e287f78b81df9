#!/bin/bash
# The rest of the h-fleet runs after the import fix (14:22 UTC), one after another.
D=docs/results/grid-saga/fleet
CELLS="swe:320:1.0:0.15 mixed:320:1.0:0.15 mixed:640:1.0:0.15 webarena:640:1.0:1.5 webarena:1280:1.0:1.5 \
  webarena:640:0.15:0.6 webarena:1280:0.15:0.6" bash $D/final.sh 0
