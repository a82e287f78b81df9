# ruff: noqa
"""Cross-tenant: tenant A (API key) compacts; tenant B (another key), same system prompt, quotes A's summary in a new
conversation. Sequential, one agent. Prints sessions, and /saga/v1/sessions entries."""

import os, sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

KEYS = {"sk-team-a": "team-a", "sk-team-b": "team-b"}
HA, HB = {"Authorization": "Bearer sk-team-a"}, {"Authorization": "Bearer sk-team-b"}


def run(tree, sp, pp, workers):
    with stack(tree, sp, pp, workers=workers, env={"SAGA_API_KEYS": json.dumps(KEYS)}) as url:
        s_sum, S, system, _ = compaction(url, 1, headers=HA)
        time.sleep(0.3)
        sB = new_conv(url, system, S, headers=HB)
        time.sleep(0.3)
        sA = new_conv(url, system, S, headers=HA)
        sess = get(url + "/saga/v1/sessions")
        print(
            os.path.basename(tree),
            f"workers={workers}",
            "summary",
            s_sum,
            "B quoting",
            sB,
            "A quoting",
            sA,
            "| B linked to A's session:",
            sB == s_sum,
            "| A linked:",
            sA == s_sum,
            "| state",
            get(url + "/saga/v1/state").get("quoted_answers"),
            flush=True,
        )
        print(json.dumps(sess)[:1500])


for tree, w, sp, pp in [(BEFORE, 1, 27200, 27210), (AFTER, 1, 27220, 27230), (AFTER, 2, 27240, 27250)]:
    run(tree, sp, pp, w)
