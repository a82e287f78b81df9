# ruff: noqa
"""16 concurrent subagents (same system prompt) whose first message quotes the orchestrator's plan (multi-line via
shim.py), 5 rounds: how many subagent sessions are on the plan's worker (AFTER: one is sent per answer, the rest
served where read, so ~1 + 15/2). BEFORE w=2 as the reference (served where read)."""

import os, sys, threading, collections

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

SYS = "You are a member of a software team. Follow the plan."
ROUNDS = int(os.environ.get("ROUNDS", "5"))


def run(tree, sp, pp):
    with shim_stack(tree, sp, pp, workers=2) as url:
        out = []
        for rep in range(ROUNDS):
            s_orch, plan, _, _ = compaction(url, 300 + rep, system=SYS, n=120)
            time.sleep(0.2)
            sids = []
            barrier = threading.Barrier(16)

            def sub(j):
                barrier.wait()
                st, txt, s = post(
                    url,
                    body_for(
                        "/v1/chat/completions",
                        SYS,
                        [("user", f"Plan:\n{plan}\nYour subtask: part {j} of round {rep}")],
                        30,
                    ),
                )
                sids.append(s)

            ts = [threading.Thread(target=sub, args=(j,)) for j in range(16)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            sess = {
                x["session_id"]: x.get("worker")
                for x in get(url + "/saga/v1/sessions?limit=1000")["sessions"]
            }
            pw = sess.get(s_orch)
            out.append(sum(1 for s in sids if sess.get(s) == pw))
        return out


R = {}
for name, tree, sp, pp in [
    ("BEFORE", BEFORE, 29400, 29410),
    ("AFTER", AFTER, 29420, 29430),
    ("MID", "/tmp/snap53a", 29440, 29450),
]:
    R[name] = run(tree, sp, pp)
    print(
        name,
        "w=2 subagents on the plan's worker per round (of 16):",
        R[name],
        "total",
        sum(R[name]),
        flush=True,
    )
a, b = sum(R["AFTER"]), sum(R["BEFORE"])
print("DEFECT" if a > b + 16 else "OK", "AFTER", a, "BEFORE", b, "MID", sum(R["MID"]), "of", 16 * ROUNDS)
