# ruff: noqa: E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""H3: two replicas at the proxy's start: A's /metrics page comes after 0.8 s (16,000 tokens of KV), B's
/metrics answers 500 at once (health fine). B's first probe ends before A's page is read: nothing to assume,
B is up with its capacity unknown until its next probe (health_interval_s later) while A's is known.
12 new workflows of ~8,000-token prompts arrive right after the proxy opens. argv[1]: case | control
(control: the same calls 3 s later, once B took A's capacity)."""

import json
import os
import sys
import threading
import time

from common import TMP, chat, proxy, replicas, start, state, stop, wait_http

which = sys.argv[1] if len(sys.argv) > 1 else "case"
PA, PB, PX = 28221, 28222, 28223
ca, cb = os.path.join(TMP, "a.json"), os.path.join(TMP, "b.json")
json.dump({"metrics": "slow", "slow_s": 0.8, "chat_s": 8}, open(ca, "w"))
json.dump({"metrics": "500", "chat_s": 8}, open(cb, "w"))
fa = start([sys.executable, "hfake.py", str(PA), ca])
fb = start([sys.executable, "hfake.py", str(PB), cb])
wait_http(f"http://127.0.0.1:{PA}/health")
wait_http(f"http://127.0.0.1:{PB}/health")
A, B = f"http://127.0.0.1:{PA}", f"http://127.0.0.1:{PB}"
px = proxy(PX, [A, B], ["--max-retries", "0"], log=os.path.join(TMP, "proxy.log"))
base = f"http://127.0.0.1:{PX}"
if which == "control":
    time.sleep(3)
caps0 = {r["replica_id"][-5:]: (r["healthy"], r["kv_capacity_tokens"]) for r in replicas(base)}
res = {}


def one(i):
    res[i] = chat(base, "w " * 8000, sid=f"s{i}", timeout=20)[0]


ts = [threading.Thread(target=one, args=(i,)) for i in range(12)]
[t.start() for t in ts]
time.sleep(1.0)
st = state(base)
adm = st["admission"]
rows = {r["replica_id"][-5:]: (r["kv_capacity_tokens"], r["reserved_tokens"]) for r in st["replicas"]}
print(
    which,
    "at the calls (healthy, capacity):",
    caps0,
    "| admitted live",
    adm["live"],
    "waiting",
    adm["waiting"],
    "| (capacity, reserved):",
    rows,
)
stop(px)
stop(fa)
stop(fb)
capB, resB = rows[str(PB)]
if caps0[str(PB)] == (True, None) and resB > 2 * capB:
    print(
        f"DEFECT: B up with capacity unknown while A's is known (16000): {adm['live']} of 12 admitted at once, B reserves {resB} tokens against {capB}"
    )
else:
    print("OK")
