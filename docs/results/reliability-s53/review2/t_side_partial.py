# ruff: noqa
"""A side conversation (same tenant + system prompt, e.g. a verifier subagent) quoting only the last two lines of
an agent's multi-line summary, then the agent's real compaction (a new conversation quoting the whole summary).
In one process the side call quotes 2 of 8 filed lines (< QUOTES_NEEDED): it takes nothing up, and the compaction
is linked. With workers=2 the side call's read `claim`s (clears) the table entries - the last two lines are all
the table holds - so the compaction, when read by the other worker, is not sent to the summary's worker.
Answers made multi-line by shim.py (one sentence a line)."""

import os, sys, threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

MID = os.environ.get("MID", "/tmp/snap53a")
K = int(os.environ.get("K", "12"))


def run(tree, sp, pp, workers, side=True):
    with shim_stack(tree, sp, pp, workers=workers) as url:
        out = []

        def ag(i):
            try:
                s_sum, summary, system, _ = compaction(url, 500 + i, n=120)
                longs = [l for l in summary.split("\n") if len(l.strip()) >= 32]
                time.sleep(0.2)
                s_side = None
                if side:
                    s_side = new_conv(
                        url, system, "\n".join(longs[-2:]), prefix="Verify these two conclusions:\n"
                    )
                    time.sleep(0.2)
                s_new = new_conv(url, system, summary)
                out.append((s_new == s_sum, s_side == s_sum, len(longs)))
            except Exception as e:
                out.append(("ERR", repr(e)[:150], 0))

        ts = [threading.Thread(target=ag, args=(i,)) for i in range(K)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        st = get(url + "/saga/v1/state").get("quoted_answers")
        return (
            sum(1 for o in out if o[0] is True),
            sum(1 for o in out if o[1] is True),
            len(out),
            sorted(set(o[2] for o in out)),
            [o for o in out if o[0] == "ERR"][:1],
            st,
        )


res = {}
for name, tree, w, side, sp, pp in [
    ("AFTER w=2 side", AFTER, 2, True, 29100, 29110),
    ("MID w=2 side", MID, 2, True, 29120, 29130),
    ("AFTER w=1 side", AFTER, 1, True, 29140, 29150),
    ("AFTER w=2 no-side", AFTER, 2, False, 29160, 29170),
]:
    linked, side_took, n, longs, errs, st = run(tree, sp, pp, w, side)
    res[name] = linked
    print(
        f"{name}: compactions linked {linked}/{n}, side calls taking the session {side_took}, long lines per summary {longs}, errs {errs}, state {st}",
        flush=True,
    )
bad = res["AFTER w=2 side"] < res["AFTER w=1 side"] - 2 and res["AFTER w=2 side"] < res["MID w=2 side"] - 2
print("DEFECT" if bad else "OK", res)
