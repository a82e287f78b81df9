# ruff: noqa
"""afs: a new session's first call is charged the tenant's moving-average output, which every call of the tenant
moves (weight 0.2). A tenant that sends a few one-token calls in a long-lived session before each long first call
(2,000 tokens written) is charged a small fraction of it: less than the fixed 200 tokens b75f990 charged.
In process, through the release queue's own SessionHistory and GpuCostModel (the code `ReleaseQueue.hold` uses)."""

import os, sys, inspect

ROOT = os.environ.get(
    "SAGA_ROOT",
    os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..")),
)
sys.path.insert(0, ROOT)
from fairness.cost import SessionHistory, GpuCostModel

h, g = SessionHistory(), GpuCostModel()
tenant_kw = "tenant" in inspect.signature(h.estimate).parameters


def est(sid, prompt):
    return h.estimate(sid, prompt, "gamer") if tenant_kw else h.estimate(sid, prompt)


def fin(sid, prompt, out):
    h.finished(sid, prompt, out, "gamer") if tenant_kw else h.finished(sid, prompt, out)


LONG, PROMPT, SHORTS = 2000, 500, 10
charged = []
ctx = 100
for cycle in range(30):
    sid = f"new-{cycle}"
    e = est(sid, PROMPT)
    charged.append((e.output_tokens, g.call_cost_s(e)))
    fin(sid, PROMPT, LONG)
    h.forget(sid)
    for k in range(SHORTS):  # one-token calls of one long-lived session
        e2 = est("pad", ctx + 5)
        fin("pad", ctx + 5, 1)
        ctx += 6
from fairness.cost import CallEstimate

actual = g.call_cost_s(CallEstimate(PROMPT, PROMPT, LONG))
old = g.call_cost_s(CallEstimate(PROMPT, PROMPT, 200))
out_tokens, cost = charged[-1]
print(
    f"long first call: writes {LONG} tokens ({actual:.3f} GPU-s); charged {out_tokens} tokens ({cost:.3f} GPU-s); b75f990's fixed charge {old:.3f} GPU-s"
)
if cost < old:
    print(
        f"DEFECT: afs charges a tenant's {LONG}-token first calls {out_tokens} output tokens ({actual / cost:.0f}x under their cost) once it pads with {SHORTS} one-token calls between them: less than b75f990's fixed 200"
    )
else:
    print("OK: padding with short calls does not lower the first-call charge below the fixed default")
