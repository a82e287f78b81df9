# ruff: noqa
import os, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get(
    "SAGA_ROOT",
    os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..")),
)
LOGS = tempfile.mkdtemp(prefix="saga-r15-")
import sys

sys.path.insert(0, ROOT)
from fairness.cost import SessionHistory, GpuCostModel, CallEstimate

g = GpuCostModel()
PROMPT, LONG = 200, 2000


def run(pads, cycles=200):
    h = SessionHistory()
    charged = actual = 0.0
    n = 0
    for c in range(cycles):
        for k, out in [(f"L{c}", LONG)] + [(f"p{c}-{i}", 1) for i in range(pads)]:
            e = h.estimate(k, PROMPT, "t")
            if c >= cycles // 2:
                charged += g.call_cost_s(e)
                actual += g.call_cost_s(CallEstimate(PROMPT, PROMPT, out))
            h.finished(k, PROMPT, out, "t")
            h.forget(k)
    return charged, actual


honest_c, honest_a = run(0)
print(f"honest (only {LONG}-token first calls): charged/actual = {honest_c / honest_a:.2f}")
worst = None
for pads in range(0, 11):
    c, a = run(pads)
    r = c / a
    print(f"pads={pads}: charged/actual = {r:.2f}")
    if worst is None or r < worst[1]:
        worst = (pads, r)
if worst[1] < 0.8 * honest_c / honest_a:
    print(
        f"DEFECT: a tenant mixing each {LONG}-token first call with {worst[0]} one-token new sessions is charged {worst[1]:.2f}x its work's cost (honest tenant {honest_c / honest_a:.2f}x): cheaper per GPU-s than an honest tenant"
    )
else:
    print("OK: padding with short new sessions does not lower the charge per unit of work")
