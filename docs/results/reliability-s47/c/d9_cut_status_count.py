# ruff: noqa
"""Item 6 (pre-existing, on the path it changed): a whole answer cut short with no retry left is answered 502
but counted saga_calls_total{status="200"} and saga_responses_total{status="200"} (forward._relay_whole
leaves outcome.status at the replica's 200; the too-large case sets 502). docs/observability.md: 'by the
status the client got'. DEFECT when a 502 answer is counted as a 200."""

import sys, time
import os, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LOGS = tempfile.mkdtemp(prefix="rev47c-")
sys.path.insert(0, HERE)
from h import *

reps = sims(1, 25820)
P = 25821
proxy(P, reps, args=["--max-retries", "0"])
time.sleep(1.2)
fault(reps[0], {"kind": "die_mid_stream"})
s, _, b = req(P, "/v1/chat/completions", CHAT("a"))
time.sleep(0.3)
c200 = metric(P, "saga_calls_total", status="200")
c502 = metric(P, "saga_calls_total", status="502")
print(
    "client got",
    s,
    "| saga_calls_total 200:",
    c200,
    "502:",
    c502,
    "| saga_responses_total 200:",
    metric(P, "saga_responses_total", status="200"),
)
print("DEFECT: the 502 is counted as a 200" if s == 502 and c200 >= 1 else "OK")
