# ruff: noqa
"""6eb37e8 (QuotedAnswers.take_up remembering the conversation that took a session up), per tree and workers:
 retry0: the compaction's first call (C) streamed, dropped after its first chunk, sent again AT ONCE
 retry1: same, sent again after 1.0 s
 dup1:   C answered in full; C sent again byte-identical (a second agent / orchestrator re-send, best-of-N)
 dup2:   C answered, C's second call (C + answer + user) answered, then C sent again
 late:   C answered, 20 s of nothing, C sent again
 other:  after a dropped C and its retry, a different conversation quoting the summary
linked = the call's X-Session-ID is the summary's session."""

import os, sys, threading, socket, time, json, http.client

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

PREV, AFTER = os.environ.get("PREV", "/tmp/snap53a"), os.environ.get("AFTER", "/tmp/snap53d")
K = int(os.environ.get("K", "6"))
MODES_ALL = ["retry0", "retry1", "other", "dup1", "dup2", "late"]
RUN = int(os.environ.get("RUN", "0"))


def dropped(url, body):
    host, port = url.split("//")[1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    r = c.getresponse()
    sid = r.getheader("X-Session-ID")
    r.read1(64)
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    return sid


def one(url, i, mode):
    s_sum, summary, system, _ = compaction(url, 1000 + i + 100 * MODES_ALL.index(mode) + RUN, n=120)
    time.sleep(0.2)
    C = [("user", "Summary of the work so far:\n" + summary)]
    if mode in ("retry0", "retry1", "other"):
        b = body_for("/v1/chat/completions", system, C, 400, True)
        s1 = dropped(url, b)
        if mode == "retry1" or mode == "other":
            time.sleep(1.0)
        st, txt, s2 = post(url, body_for("/v1/chat/completions", system, C, 20))
        if mode == "other":
            st, txt, s3 = post(
                url,
                body_for(
                    "/v1/chat/completions", system, [("user", "Review this summary please:\n" + summary)], 20
                ),
            )
            return s3 == s_sum, s1 == s_sum
        return s2 == s_sum, s1 == s_sum
    st, txt, s1 = post(url, body_for("/v1/chat/completions", system, C, 60))
    if mode == "dup2":
        ans = text_of(txt, "/v1/chat/completions")
        st, txt2, sx = post(
            url,
            body_for(
                "/v1/chat/completions",
                system,
                C + [("assistant", ans), ("user", "tool result " + "y" * 300)],
                60,
            ),
        )
    if mode == "late":
        time.sleep(20)
    st, txt, s2 = post(url, body_for("/v1/chat/completions", system, C, 60))
    return s2 == s_sum, s1 == s_sum


def run(tree, sp, pp, workers, modes):
    res = {}
    with shim_stack(tree, sp, pp, workers=workers) as url:
        for mode in modes:
            out = []

            def ag(i):
                try:
                    out.append(one(url, i, mode))
                except Exception as e:
                    out.append(("ERR " + repr(e)[:120], None))

            ts = [threading.Thread(target=ag, args=(i,)) for i in range(K)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            RES[(os.path.basename(tree), workers, mode)] = (sum(o[0] is True for o in out), len(out))
            res[mode] = "linked %d/%d (first attempt linked %d)%s" % (
                sum(o[0] is True for o in out),
                len(out),
                sum(o[1] is True for o in out),
                "".join(" " + o[0] for o in out if isinstance(o[0], str))[:200],
            )
            print(os.path.basename(tree), "w=%d" % workers, mode, res[mode], flush=True)
    return res


RES = {}
modes = os.environ.get("MODES", "retry0,retry1,other,dup1,dup2,late").split(",")
for name, tree, w, sp, pp in [
    ("AFTER", AFTER, 1, 30100, 30110),
    ("AFTER", AFTER, 2, 30120, 30130),
    ("PREV", PREV, 1, 30140, 30150),
    ("PREV", PREV, 2, 30160, 30170),
]:
    run(tree, sp, pp, w, modes)


def g(t, w, m):
    return "%d/%d" % RES.get((t, w, m), (-1, 0))


A, P = os.path.basename(AFTER), os.path.basename(PREV)
if "dup1" in modes:
    bad = RES[(A, 1, "dup1")][0] > RES[(P, 1, "dup1")][0]
    print(
        "DEFECT" if bad else "OK",
        "dup1 (C answered in full, then the same C sent again = not a retry): joined the summary's session AFTER w=1",
        g(A, 1, "dup1"),
        "w=2",
        g(A, 2, "dup1"),
        "| PREV w=1",
        g(P, 1, "dup1"),
        "w=2",
        g(P, 2, "dup1"),
    )
if "late" in modes:
    bad = RES[(A, 1, "late")][0] > RES[(P, 1, "late")][0]
    print(
        "DEFECT" if bad else "OK",
        "late (C answered, 20 s idle, C again): joined AFTER w=1",
        g(A, 1, "late"),
        "w=2",
        g(A, 2, "late"),
        "| PREV w=1",
        g(P, 1, "late"),
        "w=2",
        g(P, 2, "late"),
    )
for m in ("retry0", "retry1"):
    if m in modes:
        bad = RES[(A, 2, m)][0] < RES[(A, 1, m)][0]
        print(
            "DEFECT" if bad else "OK",
            m,
            "(the commit's retry) linked AFTER w=1",
            g(A, 1, m),
            "w=2",
            g(A, 2, m),
            "| PREV w=1",
            g(P, 1, m),
            "w=2",
            g(P, 2, m),
        )
if "other" in modes:
    bad = RES[(A, 1, "other")][0] > 0 or RES[(A, 2, "other")][0] > 0
    print(
        "DEFECT" if bad else "OK",
        "other (a different conversation quoting the summary after a retry) joined AFTER w=1",
        g(A, 1, "other"),
        "w=2",
        g(A, 2, "other"),
    )
if "dup2" in modes:
    bad = RES[(A, 1, "dup2")][0] > 0
    print(
        "DEFECT" if bad else "OK",
        "dup2 (C again after C's second call was answered) joined AFTER w=1",
        g(A, 1, "dup2"),
        "w=2",
        g(A, 2, "dup2"),
    )
