# ruff: noqa
"""(1) keep-alive: 8 agents, each on ONE persistent connection for its whole life (as SDK clients pool), compact;
count linked. (2) cost: 12 anonymous multi-turn agents x 8 calls (answers 60 tokens, so each files lines),
proxy worker CPU ms/call and wall, BEFORE vs AFTER alternating, workers=2."""

import os, sys, threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *
import review_common as common


def keepalive(url):
    res = []

    def ag(i):
        conn = http.client.HTTPConnection(url.split("//")[1], timeout=120)
        orig = common.post
        system = f"You are agent {i}"
        msgs = [("user", f"Task {i} refactor")]
        for k in range(2):
            st, txt, s = post(url, body_for("/v1/chat/completions", system, msgs, 60), conn=conn)
            msgs += [("assistant", text_of(txt, "/v1/chat/completions")), ("user", f"tool {k} " + "y" * 100)]
        msgs[-1] = ("user", "Summarize.")
        st, txt, s_sum = post(url, body_for("/v1/chat/completions", system, msgs, 60), conn=conn)
        S = text_of(txt, "/v1/chat/completions")
        st, txt, s_new = post(
            url, body_for("/v1/chat/completions", system, [("user", "Summary:\n" + S)], 20), conn=conn
        )
        res.append(s_new == s_sum)
        conn.close()

    ts = [threading.Thread(target=ag, args=(i,)) for i in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return sum(res)


def cost(url, pp):
    sup, kids = children(pp)
    pids = sup + kids
    c0, t0 = cpu_of(pids), time.time()

    def ag(i):
        system = f"agent {i} system"
        msgs = [("user", f"Task {i} " * 5)]
        for k in range(8):
            st, txt, s = post(url, body_for("/v1/chat/completions", system, msgs, 60))
            msgs += [("assistant", text_of(txt, "/v1/chat/completions")), ("user", f"tool {k} " + "z" * 300)]

    ts = [threading.Thread(target=ag, args=(i,)) for i in range(12)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return (cpu_of(pids) - c0) / 96 * 1000, time.time() - t0


for rnd in range(2):
    for tree, sp, pp in [
        (BEFORE, 27700 + 40 * rnd, 27710 + 40 * rnd),
        (AFTER, 27720 + 40 * rnd, 27730 + 40 * rnd),
    ]:
        with stack(tree, sp, pp, workers=2) as url:
            k = keepalive(url)
            c = cost(url, pp)
            print(
                os.path.basename(tree),
                "round",
                rnd,
                f"keep-alive linked {k}/8 | multi-turn cpu {c[0]:.2f} ms/call wall {c[1]:.2f}s",
                flush=True,
            )
