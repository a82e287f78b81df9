# ruff: noqa
"""False links, workers=2 BEFORE vs AFTER, workers=1 AFTER reference. Each trial: an agent compacts (summary S);
then (a) tenant B (another API key) quotes S under the same system prompt; (b) same tenant, other system prompt quotes S;
(c) the agent's own new conversation quotes S (should link), then a second new conversation quotes S again (should not);
(d, dropped: twins merge into one session by their identical answer keys) twin agents with identical conversations (identical summaries) then one new conversation quoting it (single-process: names neither)."""

import os, sys, threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

KEYS = {"sk-team-a": "team-a", "sk-team-b": "team-b"}
HA, HB = {"Authorization": "Bearer sk-team-a"}, {"Authorization": "Bearer sk-team-b"}
T = 8


def run(tree, sp, pp, workers):
    c = dict(a=0, b=0, c_first=0, c_second=0, d=0)
    with stack(tree, sp, pp, workers=workers, env={"SAGA_API_KEYS": json.dumps(KEYS)}) as url:

        def trial(t):
            s_sum, S, system, _ = compaction(url, t, headers=HA)
            time.sleep(0.2)
            if new_conv(url, system, S, headers=HB) == s_sum:
                c["a"] += 1
            if new_conv(url, system + " (reviewer)", S, headers=HA) == s_sum:
                c["b"] += 1
            if new_conv(url, system, S, headers=HA) == s_sum:
                c["c_first"] += 1
            time.sleep(0.3)
            if new_conv(url, system, S, headers=HA) == s_sum:
                c["c_second"] += 1

        ts = [threading.Thread(target=trial, args=(t,)) for t in range(T)]
        [x.start() for x in ts]
        [x.join() for x in ts]
        for t in range(0):
            out = [None, None]

            def tw(j):
                out[j] = compaction(url, 500 + t, headers=HA)

            ts = [threading.Thread(target=tw, args=(j,)) for j in range(2)]
            [x.start() for x in ts]
            [x.join() for x in ts]
            assert out[0][1] == out[1][1], "twins differ"
            time.sleep(0.2)
            s_new = new_conv(url, out[0][2], out[0][1], headers=HA)
            if s_new in (out[0][0], out[1][0]):
                c["d"] += 1
        st = get(url + "/saga/v1/state").get("quoted_answers") if False else None
    return c


for tree, w, sp, pp in [(BEFORE, 2, 27100, 27110), (AFTER, 2, 27120, 27130), (AFTER, 1, 27140, 27150)]:
    print(os.path.basename(tree), f"workers={w}", run(tree, sp, pp, w), f"of {T} each", flush=True)
