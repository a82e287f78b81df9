#!/bin/sh
# The twentieth review's scripts (forty-fifth session; docs/results/reliability.md, "A twentieth review"),
# each printing a DEFECT or an OK line. SAGA_TREE names the checkout (default: this one). Loopback ports
# 27000-27999; outputs in /tmp/saga-review45c; about 10 minutes on 2 cores.
cd "$(dirname "$0")" || exit 1
for s in t3_config_blame t1_errors_tenant t1_disconnect t1_owner_killed t1_big_cancel t1_pool_limit \
    t1_owner_stalled t2_race t2_coexist_stuck t4_des_jobs t4_leftover t5_stateless_chain t5_two_agents \
    t5_prev_and_odd t5_huge_stall; do
    echo "== c/$s.py"
    timeout 400 python3 "$s.py" 2>&1 | grep -E "^(DEFECT|OK)" || echo "(no verdict: the script failed or timed out)"
done
