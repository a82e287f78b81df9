#!/bin/bash
# The brief's candidate 1 through `saga bench grid` itself: webarena (the one workload whose oversubscription
# targets 1 and 1.5 need more KV than its floor), 640 tasks, load basis cell, loads 0.85/0.95, targets 1/1.5/2.
D=docs/results/grid-saga/fleet
PYTHONPATH=. python3 -m proxy.cli bench grid --workloads webarena --loads 0.85,0.95 --oversub 1,1.5,2 \
  --policies session-affinity,saga --tasks 640 --replicas 16 --profile llama3-70b-tp4-a100 --load-basis cell \
  --saturation-max-tasks 640 --jobs 1 --seed 0 --json $D/grid-webarena-s0.json --markdown $D/grid-webarena-s0.md
