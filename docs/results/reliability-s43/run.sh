#!/bin/sh
# The thirteenth review's scripts (docs/results/reliability.md, "A thirteenth review"), the fourteenth's, of
# the thirteenth's fixes (fixes-review/), and the fifteenth's, of the fourteenth's (fixes-review-2/), each
# printing DEFECT or OK; run from anywhere, against the checkout they sit in (SAGA_ROOT overrides).
# Ports 42100-42199, 43100-43799, 44000-44099, 45000-45099.
cd "$(dirname "$0")" || exit 1
for script in a_*.py b_*.py c_*.py fixes-review/sse_usage_word.py fixes-review/afs_avg_gaming.py \
    fixes-review/des_recount_overcount.py fixes-review-2/sse_first_block.py fixes-review-2/live_salt_usage.py \
    fixes-review-2/afs_first_pad.py fixes-review-2/des_recount_stress.py; do
    echo "== $script"
    timeout 300 python3 "$script" 2>&1 | grep -E "^(DEFECT|OK)" || echo "(no verdict: see the script's output)"
done
