# ruff: noqa
"""Fan-out: an orchestrator (same tenant + system prompt as its workers) answers a plan (a call going on from its
conversation); 16 worker agents start conversations whose first user message quotes the plan + their subtask, each
makes 4 calls. Sessions per proxy worker (from /saga/v1/sessions 'worker'), and how many took up the orchestrator's
session. workers=2, BEFORE vs AFTER, workers=1 AFTER for the linking reference."""

import os, sys, threading, collections

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

SYS = "You are a member of a software team. Follow the plan."


def run(tree, sp, pp, workers):
    with stack(tree, sp, pp, workers=workers) as url:
        out = []
        for rep in range(3):
            s_orch, plan, _, _ = compaction(url, 100 + rep, system=SYS)
            time.sleep(0.2)
            sids = []

            def sub(j):
                msgs = [("user", f"Plan:\n{plan}\nYour subtask: part {j} of round {rep}")]
                first = None
                for k in range(4):
                    st, txt, s = post(url, body_for("/v1/chat/completions", SYS, msgs, 40))
                    first = first or s
                    msgs += [
                        ("assistant", text_of(txt, "/v1/chat/completions")),
                        ("user", f"tool result {k} for {j}"),
                    ]
                sids.append(first)

            ts = [threading.Thread(target=sub, args=(j,)) for j in range(16)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            sess = {
                x["session_id"]: x.get("worker")
                for x in get(url + "/saga/v1/sessions?limit=1000")["sessions"]
            }
            out.append(
                (sum(1 for s in sids if s == s_orch), dict(collections.Counter(sess.get(s) for s in sids)))
            )
        sess = get(url + "/saga/v1/sessions?limit=1000")["sessions"]
        per = collections.Counter(
            s.get("worker") for s in sess if s["calls"] >= 4 and not s["session_id"].startswith("req-")
        )
        return out, dict(per)


for tree, w, sp, pp in [(BEFORE, 2, 27600, 27610), (AFTER, 2, 27620, 27630), (AFTER, 1, 27640, 27650)]:
    linked, per = run(tree, sp, pp, w)
    print(
        os.path.basename(tree),
        f"workers={w}",
        "per round (subagents taking up the orchestrator session, subagent sessions per worker)",
        linked,
        "| sessions (>=4 calls) per worker",
        per,
        flush=True,
    )
