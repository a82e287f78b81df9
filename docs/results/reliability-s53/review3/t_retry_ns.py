# ruff: noqa
"""The commit's retry, non-streamed: the compaction's first call C (max_tokens 400, not streamed) given up by the
client after 0.3 s (socket closed), then sent again at once (a client's timeout-and-retry), or after 1 s.
linked = the retry's session is the summary's. AFTER w=1 and w=2."""

import os, sys, socket, time, json, http.client, threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

AFTER = "/tmp/snap53d"
K = int(os.environ.get("K", "6"))


def gave_up(url, body, after):
    host, port = url.split("//")[1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=after)
    c.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        r = c.getresponse()
        r.read()
        return "answered"
    except Exception:
        c.sock.close() if c.sock else None
        return "timeout"


R = {}
for w, sp, pp in [(1, 30500, 30510), (2, 30520, 30530)]:
    with shim_stack(AFTER, sp, pp, workers=w) as url:
        for wait in (0.0, 1.0):
            out = []

            def ag(i):
                try:
                    s_sum, summary, system, _ = compaction(url, 8000 + i + int(wait * 100) + 1000 * w, n=120)
                    time.sleep(0.2)
                    C = [("user", "Summary of the work so far:\n" + summary)]
                    g = gave_up(url, body_for("/v1/chat/completions", system, C, 400), 0.3)
                    time.sleep(wait)
                    st, txt, s2 = post(url, body_for("/v1/chat/completions", system, C, 20))
                    out.append((s2 == s_sum, g))
                except Exception as e:
                    out.append(("ERR " + repr(e)[:100], None))

            ts = [threading.Thread(target=ag, args=(i,)) for i in range(K)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            R[(w, wait)] = sum(o[0] is True for o in out)
            print(
                f"AFTER w={w} retry after {wait}s: linked {R[(w, wait)]}/{len(out)}; first attempts {[o[1] for o in out]}",
                flush=True,
            )
print(
    "DEFECT" if R[(1, 0.0)] < K else "OK",
    "non-streamed timeout + immediate retry, w=1: linked %d/%d (after 1 s: %d/%d)"
    % (R[(1, 0.0)], K, R[(1, 1.0)], K),
)
print(
    "DEFECT" if R[(2, 0.0)] < R[(1, 0.0)] or R[(2, 1.0)] < R[(1, 1.0)] else "OK",
    "w=2: immediate %d/%d, after 1 s %d/%d" % (R[(2, 0.0)], K, R[(2, 1.0)], K),
)
