# ruff: noqa
"""Cost: one-shot first calls with a large first message (LINES lines x 500 chars) under a system prompt whose tag
agents filed (so `filed(tag)` is true in AFTER's reading worker), workers=2. Proxy worker CPU seconds per call,
BEFORE vs AFTER alternating, same script. Also small one-shot calls (no tag filed)."""

import os, sys, threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

SYS = "You are a shared system prompt for all agents and one-shot traffic."
N, C = int(os.environ.get("N", 60)), 4


def batch(url, pp, mk):
    sup, kids = children(pp)
    pids = sup + kids
    c0, t0 = cpu_of(pids), time.time()
    sts = {}

    def w(j):
        for i in range(j, N, C):
            st, _, _ = post(url, mk(i))
            sts[st] = sts.get(st, 0) + 1

    ts = [threading.Thread(target=w, args=(j,)) for j in range(C)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return (cpu_of(pids) - c0) / N * 1000, (time.time() - t0), sts


def big(i, lines):
    txt = "\n".join(
        f"line {k} of doc {i}: " + ("lorem ipsum dolor sit amet " * 20)[:480] for k in range(lines)
    )
    return {
        "model": "saga-sim",
        "max_tokens": 1,
        "messages": [{"role": "system", "content": SYS}, {"role": "user", "content": txt}],
    }


def small(i):
    return {
        "model": "saga-sim",
        "max_tokens": 1,
        "messages": [
            {"role": "system", "content": f"one-shot {i % 7}"},
            {"role": "user", "content": f"question {i} " * 10},
        ],
    }


def shortlines(i):
    txt = "\n".join(f"{i:05d} short line number {k:06d} xx" for k in range(600))
    return {
        "model": "saga-sim",
        "max_tokens": 1,
        "messages": [{"role": "system", "content": SYS}, {"role": "user", "content": txt}],
    }


def run(tree, sp, pp):
    with stack(tree, sp, pp, workers=2) as url:
        for a in range(4):  # agents that file under SYS
            compaction(url, a, system=SYS)
        r = {}
        for name, mk in [
            ("small", small),
            ("big-600", lambda i: big(i, 600)),
            ("big-2000", lambda i: big(i, 2000)),
            ("short-lines-600x34", shortlines),
        ]:
            batch(url, pp, mk)  # warm
            r[name] = batch(url, pp, mk)
        return r


res = {BEFORE: [], AFTER: []}
for rnd in range(2):
    for tree, sp, pp in [
        (BEFORE, 27400 + rnd * 40, 27410 + rnd * 40),
        (AFTER, 27420 + rnd * 40, 27430 + rnd * 40),
    ]:
        r = run(tree, sp, pp)
        print(
            os.path.basename(tree),
            "round",
            rnd,
            {k: ("cpu %.2f ms/call" % v[0], "wall %.1fs" % v[1], v[2]) for k, v in r.items()},
            flush=True,
        )
