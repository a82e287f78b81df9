# ruff: noqa
"""Compaction linking per API shape / streaming, workers=2, BEFORE vs AFTER (and workers=1 AFTER as reference).
K agents per variant run concurrently; counts new conversations filed in the summary's session."""

import os, sys, threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

K = 8
VARIANTS = [
    ("chat", "/v1/chat/completions", False),
    ("chat-sse", "/v1/chat/completions", True),
    ("messages", "/v1/messages", False),
    ("messages-sse", "/v1/messages", True),
    ("responses", "/v1/responses", False),
    ("responses-sse", "/v1/responses", True),
]


def run(tree, sp, pp, workers):
    res = {}
    with stack(tree, sp, pp, workers=workers) as url:
        for name, path, stream in VARIANTS:
            out = []

            def ag(i):
                try:
                    s_sum, summary, system, _ = compaction(url, 1000 * len(res) + i, path, stream)
                    time.sleep(0.2)
                    s_new = new_conv(url, system, summary, path, stream)
                    out.append((s_sum == s_new, len(summary), summary.count("\n")))
                except Exception as e:
                    out.append(("ERR", repr(e)[:200], 0))

            ts = [threading.Thread(target=ag, args=(i,)) for i in range(K)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            errs = [o for o in out if o[0] == "ERR"]
            res[name] = (sum(1 for o in out if o[0] is True), len(out), errs[:1], out[0][1])
        res["state"] = get(url + "/saga/v1/state").get("quoted_answers")
    return res


for tree, w, sp, pp in [(BEFORE, 2, 27000, 27010), (AFTER, 2, 27020, 27030), (AFTER, 1, 27040, 27050)]:
    r = run(tree, sp, pp, w)
    print(os.path.basename(tree), f"workers={w}", r, flush=True)
