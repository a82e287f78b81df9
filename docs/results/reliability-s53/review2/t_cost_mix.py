# ruff: noqa
"""Cost: (a) 8 anonymous agents x 8 turns (each continuation's answer is filed and, in AFTER, recorded in the
table), (b) 120 one-shot first calls of 40 long lines under the agents' (filed) system prompt - each probes the
table and is claimed nothing. Proxy worker CPU ms per call, workers=2, BEFORE/AFTER alternating, 2 rounds."""

import os, sys, threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

SYS = "You are a shared coding agent prompt."


def cpu_batch(pp, fn, n):
    sup, kids = children(pp)
    pids = sup + kids
    c0 = cpu_of(pids)
    fn()
    return (cpu_of(pids) - c0) / n * 1000


def run(tree, sp, pp, rnd):
    with stack(tree, sp, pp, workers=2) as url:

        def agents():
            def ag(i):
                msgs = [("user", f"round {rnd} task {i}: fix the bug in module {i}")]
                for k in range(8):
                    st, txt, s = post(url, body_for("/v1/chat/completions", SYS, msgs, 60))
                    msgs += [
                        ("assistant", text_of(txt, "/v1/chat/completions")),
                        ("user", f"tool result {k} " + "y" * 100),
                    ]

            ts = [threading.Thread(target=ag, args=(i,)) for i in range(8)]
            [t.start() for t in ts]
            [t.join() for t in ts]

        def oneshots():
            def w(j):
                for i in range(j, 120, 4):
                    text = "\n".join(
                        f"line {l} of document {i} round {rnd}: some content that is long enough"
                        for l in range(40)
                    )
                    post(url, body_for("/v1/chat/completions", SYS, [("user", text)], 5))

            ts = [threading.Thread(target=w, args=(j,)) for j in range(4)]
            [t.start() for t in ts]
            [t.join() for t in ts]

        a = cpu_batch(pp, agents, 64)
        b = cpu_batch(pp, oneshots, 120)
        return a, b


R = {"BEFORE": [], "AFTER": []}
port = 29500
for rnd in range(2):
    for name, tree in (("BEFORE", BEFORE), ("AFTER", AFTER)):
        R[name].append(run(tree, port, port + 10, rnd))
        port += 20
        print(name, rnd, "agents ms/call %.2f, one-shot ms/call %.2f" % R[name][-1], flush=True)
import statistics as st

ra = st.mean(x[0] for x in R["AFTER"]) / st.mean(x[0] for x in R["BEFORE"])
rb = st.mean(x[1] for x in R["AFTER"]) / st.mean(x[1] for x in R["BEFORE"])
print(
    "DEFECT" if max(ra, rb) > 1.25 else "OK", "AFTER/BEFORE cpu ratio: agents %.2f one-shot %.2f" % (ra, rb)
)
