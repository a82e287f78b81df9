# ruff: noqa
"""Two agents given the same system prompt and task, started at the same moment (a best-of-N / parallel
attempts fan-out), naming no session. docs/config.md and proxy/identity.py: 'a first call whose opening is
already a live chained session gets a fresh id, so two agents given the same task stay apart'."""

import os, sys, json, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *

P, S = 43210, 43200


def first(results, i, opening):
    s, h, b = chat(P, opening, max_tokens=48, ignore_eos=True)
    results[i] = (h.get("X-Session-ID"), json.loads(b)["choices"][0]["message"]["content"])


try:
    setup(S, 2, P, config="admin_token: adm\n", tag="co")
    opening = [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": "Fix the failing test in repo X."},
    ]
    res = {}
    ts = [threading.Thread(target=first, args=(res, i, opening)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    seconds = []
    for i in range(2):
        sid, ans = res[i]
        msgs = opening + [
            {"role": "assistant", "content": ans},
            {"role": "user", "content": f"tool result {i}"},
        ]
        s, h, b = chat(P, msgs, max_tokens=8)
        seconds.append(h.get("X-Session-ID"))
    print("first calls:", [res[i][0] for i in range(2)], "second calls:", seconds)
    _, _, b = req(P, "GET", "/saga/v1/sessions", headers={"Authorization": "Bearer adm"})
    print("sessions:", [(x["session_id"], x["calls"]) for x in json.loads(b)["sessions"]])
    if seconds[0] == seconds[1]:
        print(
            f"DEFECT: two agents with one opening started concurrently share session {seconds[0]} (expected apart)"
        )
    else:
        print("OK: concurrent agents with one opening stay in separate sessions")
finally:
    stop_all()
