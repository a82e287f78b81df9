# ruff: noqa: E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""H2: one replica publishing 16,000 tokens of KV capacity. One call fails on a reset connection (the proxy marks
the replica down with down_stats: capacity now 0 = unknown); from then on its /metrics answers 500 (health fine,
calls fine). The fix's claim: a replica is not routed to with unknown room (admission reads it as room for every
waiting workflow). 12 new sessions of ~4,000-token prompts arrive: how many are admitted at once?
argv[1]: fail (the case) | control (no failed call: /metrics answers 500 all the same)"""

import json
import os
import sys
import threading
import time

from common import TMP, chat, proxy, replicas, start, state, stop, wait_http

which = sys.argv[1] if len(sys.argv) > 1 else "fail"
P, PX = 27221, 27222
ctl = os.path.join(TMP, "ctl.json")


def setc(**k):
    json.dump(k, open(ctl + ".tmp", "w"))
    os.replace(ctl + ".tmp", ctl)


setc(metrics="ok")
f = start([sys.executable, "hfake.py", str(P), ctl])
wait_http(f"http://127.0.0.1:{P}/health")
px = proxy(
    PX,
    [f"http://127.0.0.1:{P}"],
    ["--health-interval-s", "0.5", "--max-retries", "0"],
    log=os.path.join(TMP, "proxy.log"),
)
base = f"http://127.0.0.1:{PX}"
time.sleep(1.5)
print("start:", {k: replicas(base)[0][k] for k in ("healthy", "kv_capacity_tokens")})
if which == "fail":
    setc(metrics="ok", chat="reset")
    print(
        "failed call:",
        chat(base, "x", sid="f0", timeout=5)[0],
        {k: replicas(base)[0][k] for k in ("healthy", "kv_capacity_tokens")},
    )
setc(metrics="500", chat_s=8)
time.sleep(2)
print("metrics 500 since:", {k: replicas(base)[0][k] for k in ("healthy", "kv_capacity_tokens")})
res = {}


def one(i):
    res[i] = chat(base, "w " * 8000, sid=f"s{i}", timeout=20)[0]


ts = [threading.Thread(target=one, args=(i,)) for i in range(12)]
[t.start() for t in ts]
time.sleep(2.5)
st = state(base)
adm = st["admission"]
rep = st["replicas"][0]
print(
    which,
    "12 sessions: admitted live",
    adm["live"],
    "waiting",
    adm["waiting"],
    "reserved",
    rep["reserved_tokens"],
    "capacity",
    rep["kv_capacity_tokens"],
)
[t.join() for t in ts]
time.sleep(1.5)
print("later:", {k: replicas(base)[0][k] for k in ("healthy", "kv_capacity_tokens")})
stop(px)
stop(f)
if rep["kv_capacity_tokens"] == 0 and adm["waiting"] == 0 and adm["live"] == 12:
    print(
        f"DEFECT: after one failed call the replica is back up with its KV capacity unknown: {adm['live']} of 12 new workflows admitted at once, {rep['reserved_tokens']} tokens reserved on a 16,000-token replica"
    )
else:
    print("OK")
