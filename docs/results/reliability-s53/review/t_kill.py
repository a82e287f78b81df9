# ruff: noqa
"""kill -9 one worker right after 8 agents got their summaries, then at once each sends its quoted new conversation
(and 8 one-shot calls as control). Counts failures, latency max, linked. BEFORE vs AFTER, workers=2."""

import os, sys, threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

K = 8


def children(pp):
    sup = [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-f", f"proxy serve --port {pp} "], capture_output=True, text=True
        ).stdout.split()
    ]
    kids = []
    for s in sup:
        kids += [
            int(p)
            for p in subprocess.run(["pgrep", "-P", str(s)], capture_output=True, text=True).stdout.split()
        ]
    return sup, kids


def run(tree, sp, pp):
    with stack(tree, sp, pp, workers=2) as url:
        sup, kids = children(pp)
        res = [None] * K
        ts = [threading.Thread(target=lambda i=i: res.__setitem__(i, compaction(url, i))) for i in range(K)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        sess = get(url + "/saga/v1/sessions")["sessions"]
        where = {s["session_id"]: s.get("worker") for s in sess}
        os.kill(kids[0], signal.SIGKILL)
        time.sleep(float(os.environ.get("DELAY", "0")))
        out = []

        def q(i):
            t = time.time()
            try:
                s = new_conv(url, res[i][2], res[i][1])
                out.append(("ok", s == res[i][0], time.time() - t, where.get(res[i][0])))
            except Exception as e:
                out.append(("err", repr(e)[:80], time.time() - t, where.get(res[i][0])))

        def one(i):
            t = time.time()
            try:
                st, _, _ = post(
                    url, body_for("/v1/chat/completions", "one shot", [("user", f"hello {i} " * 5)], 10)
                )
                out.append(("ctl", st, time.time() - t, None))
            except Exception as e:
                out.append(("ctlerr", repr(e)[:80], time.time() - t, None))

        ts = [threading.Thread(target=q, args=(i,)) for i in range(K)] + [
            threading.Thread(target=one, args=(i,)) for i in range(K)
        ]
        [t.start() for t in ts]
        [t.join() for t in ts]
        qs = [o for o in out if o[0] in ("ok", "err")]
        print(
            os.path.basename(tree),
            "killed",
            kids[0],
            "of",
            kids,
            "| quoted: ok",
            sum(o[0] == "ok" for o in qs),
            "err",
            [o[1] for o in qs if o[0] == "err"],
            "linked",
            sum(o[1] is True for o in qs),
            "max lat %.2f" % max(o[2] for o in qs),
            "| control ok",
            sum(o[0] == "ctl" and o[1] == 200 for o in out),
            "max lat %.2f" % max(o[2] for o in out if o[0].startswith("ctl")),
            flush=True,
        )
        time.sleep(3)
        print("   after restart, kids", children(pp)[1])


for tree, sp, pp in [
    (BEFORE, 27300, 27310),
    (AFTER, 27320, 27330),
    (BEFORE, 27340, 27350),
    (AFTER, 27360, 27370),
]:
    run(tree, sp, pp)
