#!/bin/sh
cd /tmp/reviewK
for run in 1 2; do for scen in stagger subagents; do
  echo "== run $run"
  timeout 300 python3 t4_perf.py /tmp/snapbase 26110 $scen saga
  timeout 300 python3 t4_perf.py /tmp/snapkey 26110 $scen saga
  timeout 300 python3 t4_perf.py /tmp/snapkey 26110 $scen round-robin
done; done
