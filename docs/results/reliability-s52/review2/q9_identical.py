# ruff: noqa
"""Two agents given the same task (different system prompts, identical answers: one task sampled twice). A answers, then
B answers; A compacts (new conversation quoting its own answer), then B compacts."""

import sys, threading, time

sys.path.insert(0, "/tmp/reviewQ")
from harness import stack, post_sync

tree, port = sys.argv[1], int(sys.argv[2])
SIM = ("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--time-scale", "20")


def body(m, n=60):
    return {"model": "saga-sim", "max_tokens": n, "ignore_eos": True, "messages": m}


with stack(tree, port - 10, port, sim_args=SIM) as url:
    op = [{"role": "system", "content": "solver"}, {"role": "user", "content": "Solve task 7"}]
    opb = [{"role": "system", "content": "solver B"}, op[1]]
    r = {"A": post_sync(url, body(op, 60)), "B": post_sync(url, body(opb, 60))}
    (da, sa, _, _), (db, sb, _, _) = r["A"], r["B"]
    xa, xb = da["choices"][0]["message"]["content"], db["choices"][0]["message"]["content"]
    print(f"A {sa[:14]}  B {sb[:14]}  identical answers: {xa == xb}")
    _, sa2, _, _ = post_sync(url, body([op[0], {"role": "user", "content": "Summary:\n" + xa}]))
    _, sb2, _, _ = post_sync(url, body([op[0], {"role": "user", "content": "Summary:\n" + xb}]))
    print(
        f"A after compaction {sa2[:14]} (own: {sa2 == sa}, B's: {sa2 == sb});  B after compaction {sb2[:14]} (own: {sb2 == sb}, A's: {sb2 == sa})"
    )
