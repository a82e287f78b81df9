#!/bin/sh
# The heavier flood with the interactive tenant at weight W, seeds S..., policies P...:
#   docs/results/saga-v24/weights.sh OUT "1 2" "0 1 2 3 4 5" "saga session-affinity" [extra args]
out=$1; weights=$2; seeds=$3; policies=$4; shift 4
for w in $weights; do for p in $policies; do for s in $seeds; do
  saga bench fairness --policy "$p" --seed "$s" --interactive-tasks 150 --batch-tasks 800 --max-in-flight 6 \
    --contenders afs --interactive-weight "$w" "$@" --json "$out/w$w-$p-s$s.json" > /dev/null
done; done; done
