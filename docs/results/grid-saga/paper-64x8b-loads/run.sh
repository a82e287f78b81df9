# The 64 x llama3-8b-h100 point at higher loads (thirty-ninth session): run from the repository root, at
# 2d83a79 (a copy of its tree, compiled), 2026-12-06 02:15-03:01 UTC, beside other work on the 2-core VM.
set -x
for w in swe:640:1280 mixed:1280:2560; do
  IFS=: read -r name tasks sat <<< "$w"
  nice -n 15 python3 -m proxy.cli bench grid --workloads "$name" --loads 0.95,1.1,1.3 --oversub 1.5 \
    --policies session-affinity,saga --tasks "$tasks" --replicas 64 --profile llama3-8b-h100 --load-basis full-kv \
    --saturation-max-tasks "$sat" --jobs 1 --seed 0 \
    --json "docs/results/grid-saga/paper-64x8b-loads/$name-loads.json" \
    --markdown "docs/results/grid-saga/paper-64x8b-loads/$name-loads.md"
done
nice -n 15 python3 -m proxy.cli bench grid --workloads swe --loads 1.6,2.0 --oversub 1.5 \
  --policies session-affinity,saga --tasks 640 --replicas 64 --profile llama3-8b-h100 --load-basis full-kv \
  --saturation-max-tasks 1280 --jobs 1 --seed 0 \
  --json docs/results/grid-saga/paper-64x8b-loads/swe-loads-high.json \
  --markdown docs/results/grid-saga/paper-64x8b-loads/swe-loads-high.md
