#!/bin/sh
# The sixteenth review's scripts (forty-fourth session; docs/results/reliability.md, "A sixteenth review"):
# a/ a new user's walkthrough of the README and docs, b/ load testing and deployment. Each prints a DEFECT or
# an OK line. SAGA_TREE names the checkout they run against (default: this one; compiled or not as it is).
# Loopback ports 23000-24999; about 12 minutes on 2 cores. `live_sigterm.py` and `r13_ctrl_c_bench.py`
# kill only what they started.
cd "$(dirname "$0")" || exit 1
for script in a/r*.py b/burst_shape.py b/failed_tasks_in_tct.py b/request_timeout.py b/live_sigterm.py \
    b/sessions_not_ended.py b/live_trace_options.py "b/webui_values.py time_scale" "b/webui_values.py tenant_mix" \
    b/slo_class_mix.py b/json_log_plain_line.py; do
    echo "== $script"
    # shellcheck disable=SC2086
    timeout 300 python3 $script 2>&1 | grep -E "^(DEFECT|OK)" || echo "(no verdict: the script failed or timed out)"
done
