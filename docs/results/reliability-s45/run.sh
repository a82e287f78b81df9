#!/bin/sh
# The nineteenth review's scripts (forty-fifth session; docs/results/reliability.md, "A nineteenth review"):
# a/ the forty-fourth session's last fixes (supervisor port locks, usage stripping, help defaults,
# environment values, interrupted benches), b/ the non-chat call routes (/v1/messages, /v1/responses,
# /v1/completions) as real clients use them. Each prints a DEFECT or an OK line. SAGA_TREE names the
# checkout they run against (default: this one; compiled or not as it is). Loopback ports 25000-26999;
# logs in /tmp/saga-review45a and /tmp/saga-review45-logs; about 15 minutes on 2 cores.
cd "$(dirname "$0")" || exit 1
mkdir -p /tmp/saga-review45-logs
for script in a/sup_race_spellings.py a/sup_orders.py a/sup_sigkill.py a/sup_restart.py a/sup_ipv6_message.py \
    a/sse_main.py a/sse_edge.py a/help_defaults.py a/env_names.py a/env_kv_events_port.py a/env_huge_timeouts.py \
    a/bench_interrupt.py a/bench_des_sigint_tb10.py b/t*.py; do
    echo "== $script"
    timeout 400 python3 "$script" 2>&1 | grep -E "^(DEFECT|OK)" || echo "(no verdict: the script failed or timed out)"
done
