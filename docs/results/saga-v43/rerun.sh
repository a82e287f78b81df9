#!/bin/sh
# The README's two-tenant claims after the thirteenth review's change to afs first-call charges (a session's
# first call expected to write its tenant's recent mean output, not 200 tokens): saga-v24's heavier flood for
# `saga` at weights 1 and 2 and with the fleet share, seeds 0-5. Run from the repository root.
out=docs/results/saga-v43
sh docs/results/saga-v24/weights.sh "$out" "1 2" "0 1 2 3 4 5" "saga"
for s in 0 1 2 3 4 5; do
  saga bench fairness --policy saga --seed "$s" --interactive-tasks 150 --batch-tasks 800 --max-in-flight 6 \
    --contenders afs --share fleet --json "$out/fleet-saga-s$s.json" > /dev/null
done
