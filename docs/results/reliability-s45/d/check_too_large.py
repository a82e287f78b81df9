# ruff: noqa
"""A whole answer over max_answer_bytes: client gets 502 (f-big run); what do saga_calls_total / saga_responses_total
(the dashboard's "Answers by status") record? docs/observability.md: saga_calls_total counts answers relayed (any status)."""

import json, re

R = "/tmp/review45d"
m = open(f"{R}/f-big-metrics.txt").read()
calls = re.findall(r'^saga_calls_total\{route="[^"]+",status="(\d+)"\} (\S+)', m, re.M)
resp = re.findall(r'^saga_responses_total\{replica="[^"]+",status="(\d+)"\} (\S+)', m, re.M)
print(
    f"{'DEFECT' if any(s == '200' for s, _ in calls + resp) else 'OK'}: 4 calls answered 502 upstream_answer_too_large to the client; saga_calls_total statuses {calls}, saga_responses_total statuses {resp}"
)
