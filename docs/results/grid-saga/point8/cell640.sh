#!/bin/bash
# One 640-task cell of docs/results/saga.md "Where the published 1.64x can be tested" (h-point8), run from the
# repository root: bash docs/results/grid-saga/point8/cell640.sh WORKLOAD SEED LOAD
# The offered rate is LOAD x the full-KV saturating throughput of `saga bench grid` for that workload and seed
# (its JSON, W-sS.json beside this script: 160 tasks, population search up to 640). The KV is calibrated
# towards oversubscription 1.5 as `bench grid --load-basis full-kv` does, with 640 tasks: session-affinity at
# the full KV measures O1, first guess K1 = max(O1 / 1.5, floor), floor = the smallest KV per replica that
# holds the longest of the 640 task contexts plus a block; session-affinity at K1 measures O2; unless O2 is
# within 10% of 1.5, K2 = K1 x (O2 / 1.5)^(1/k), k through (1, O1) and (K1, O2) clamped to [0.2, 2], not
# below the floor. The grid skips that step for a cell whose first guess is below the floor; this does not.
# Then every policy runs at K2. (The runs of 2026-12-01 went through two /tmp scripts with this logic.)
set -e
W=$1; S=$2; L=$3; TAG=$W-L$L-s$S
D=docs/results/grid-saga/point8
OUT=${OUT:-$D}  # where the runs' JSON goes
des() {  # KV_SCALE RATE POLICIES NAME
  python3 -m proxy.cli bench des --workload "$W" --tasks 640 --replicas 16 --profile llama3-70b-tp4-a100 \
    --kv-scale "$1" --arrival-rate "$2" --seed "$S" --policies "$3" --jobs 1 --json "$OUT/$4.json"
}
ov() { python3 -c "import json;print(json.load(open('$OUT/$1.json'))['policies']['session-affinity']['kv']['oversubscription_mean'])"; }
read -r RATE FLOOR < <(python3 -c "
import json
from loadtests.workloads.catalog import generate
from loadtests.bench.grid import peak_context_tokens
from simulator.cost_model import get_profile
p = get_profile('llama3-70b-tp4-a100')
sat = json.load(open('$D/$W-s$S.json'))['workloads'][0]['saturation_full_kv_tasks_per_s']
longest = max(peak_context_tokens(t) for t in generate('$W', 640, seed=$S))
print(repr($L * sat), repr((longest + p.block_size) / p.kv_capacity_tokens))")
des 1.0 "$RATE" session-affinity "cal640-$TAG-k1"
O1=$(ov "cal640-$TAG-k1")
K1=$(python3 -c "print(repr(max($O1 / 1.5, $FLOOR)))")
des "$K1" "$RATE" session-affinity "cal640-$TAG-k2"
O2=$(ov "cal640-$TAG-k2")
K2=$(python3 -c "
import math
o1, o2, k1 = $O1, $O2, $K1
if abs(o2 / 1.5 - 1) <= 0.1:
    print(repr(k1))
else:
    k = min(max(math.log(o1 / o2) / math.log(k1 / 1.0), 0.2), 2.0)
    print(repr(max(k1 * (o2 / 1.5) ** (1 / k), $FLOOR)))")
echo "$TAG: rate $RATE floor $FLOOR; O1 $O1 -> K1 $K1; O2 $O2 -> K2 $K2"
des "$K2" "$RATE" session-affinity,prefix-load,continuum-ttl,saga "ss640-$TAG"
