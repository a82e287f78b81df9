# ruff: noqa
"""Item 6: a whole answer cut short by a lone replica (no other to retry on). With max_retries 0 it is counted
saga_errors_total{cause="upstream_mid_answer"} (docs/observability.md: 'a whole answer replaced by a 502');
with retries left (the default, 2) the same 502 is counted cause="upstream_error", which the docs define as
'502: no attempt reached a replica'. Prints DEFECT when the two differ."""

import sys, time
import os, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LOGS = tempfile.mkdtemp(prefix="rev47c-")
sys.path.insert(0, HERE)
from h import *


def run(mr, base):
    reps = sims(1, base)
    P = base + 1
    proxy(P, reps, args=["--max-retries", str(mr)])
    time.sleep(1.2)
    fault(reps[0], {"kind": "die_mid_stream"})
    s, _, b = req(P, "/v1/chat/completions", CHAT("a"))
    time.sleep(0.3)
    _, _, m = req(P, "/metrics")
    causes = sorted(l for l in m.decode().splitlines() if l.startswith("saga_errors_total{"))
    return s, causes


r0 = run(0, 25800)
r2 = run(2, 25810)
print("max_retries 0:", r0)
print("max_retries 2:", r2)
if r0[0] == r2[0] == 502 and r0[1] != r2[1]:
    print(
        "DEFECT: the same cut (502 'the replica failed while answering') is counted",
        r2[1],
        "with retries left, but",
        r0[1],
        "without",
    )
else:
    print("OK: counted alike")
