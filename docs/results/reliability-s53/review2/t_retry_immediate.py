# ruff: noqa
"""(a) retry: the compaction's first call is streamed and the client drops it after the first chunk (a client
timeout), then sends it again; linked = the retry's session is the summary's. (b) immediate: the summary streamed,
the new conversation sent the moment its last byte arrives (no pause). AFTER w=2 vs MID w=2 vs AFTER w=1."""

import os, sys, threading, socket

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

MID = os.environ.get("MID", "/tmp/snap53a")
K = int(os.environ.get("K", "10"))


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
    r.read1(64) if hasattr(r, "read1") else r.read(64)
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    return sid


def run(tree, sp, pp, workers):
    res = {}
    with shim_stack(tree, sp, pp, workers=workers) as url:
        for mode in ("retry", "immediate"):
            out = []

            def ag(i):
                try:
                    if mode == "retry":
                        s_sum, summary, system, _ = compaction(url, 900 + i, n=120)
                        time.sleep(0.2)
                        b = body_for(
                            "/v1/chat/completions",
                            system,
                            [("user", "Summary of the work so far:\n" + summary)],
                            400,
                            True,
                        )
                        s1 = dropped(url, b)
                        time.sleep(0.3)
                        s2 = new_conv(url, system, summary)
                        out.append((s2 == s_sum, s1 == s_sum))
                    else:
                        s_sum, summary, system, _ = compaction(url, 950 + i, n=120, stream=True)
                        s2 = new_conv(url, system, summary, stream=True)
                        out.append((s2 == s_sum, None))
                except Exception as e:
                    out.append(("ERR " + repr(e)[:100], None))

            ts = [threading.Thread(target=ag, args=(i,)) for i in range(K)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            res[mode] = dict(
                linked=sum(1 for o in out if o[0] is True),
                first_attempt_linked=sum(1 for o in out if o[1] is True),
                n=len(out),
                errs=[o[0] for o in out if isinstance(o[0], str)][:1],
            )
    return res


R = {}
for name, tree, w, sp, pp in [
    ("AFTER w=2", AFTER, 2, 29300, 29310),
    ("MID w=2", MID, 2, 29320, 29330),
    ("AFTER w=1", AFTER, 1, 29340, 29350),
]:
    R[name] = run(tree, sp, pp, w)
    print(name, R[name], flush=True)
for mode in ("retry", "immediate"):
    a, m, o = (R[k][mode]["linked"] for k in ("AFTER w=2", "MID w=2", "AFTER w=1"))
    print("DEFECT" if a < min(m, o) - 2 else "OK", mode, "linked: AFTER w=2", a, "MID w=2", m, "AFTER w=1", o)
