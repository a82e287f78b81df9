# ruff: noqa: E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""H1: one replica that never publishes vllm:cache_config_info (a non-vLLM or older backend); its /health and
calls answer at once, only its /metrics is slower than health_timeout_s. The ninth review's fix: "a replica's
health is its /health". Are calls refused?  argv[1]: nocap (the case) | cap (control: same, capacity published)"""

import json
import os
import sys
import time

from common import TMP, chat, proxy, replicas, start, stop, wait_http

which = sys.argv[1] if len(sys.argv) > 1 else "nocap"
P, PX = 27201, 27202
ctl = os.path.join(TMP, "ctl.json")
json.dump({"metrics": "ok", "cap": which == "cap"}, open(ctl, "w"))
f = start([sys.executable, "hfake.py", str(P), ctl])
wait_http(f"http://127.0.0.1:{P}/health")
px = proxy(
    PX,
    [f"http://127.0.0.1:{P}"],
    ["--policy", "round-robin", "--health-interval-s", "0.5", "--health-timeout-s", "1"],
    log=os.path.join(TMP, "proxy.log"),
)
base = f"http://127.0.0.1:{PX}"
time.sleep(1.5)
ok0 = [chat(base, f"a{i}", timeout=5)[0] for i in range(3)]
json.dump({"metrics": "slow", "slow_s": 2, "cap": which == "cap"}, open(ctl, "w"))
time.sleep(4)
res = []
for i in range(5):
    res.append(chat(base, f"b{i}", timeout=5)[0])
    time.sleep(0.3)
row = replicas(base)[0]
print(
    which,
    "fast /metrics:",
    ok0,
    "| slow /metrics (2 s, timeout 1 s):",
    res,
    "| listed healthy:",
    row["healthy"],
    "capacity:",
    row["kv_capacity_tokens"],
)
stop(px)
stop(f)
if any(s != 200 for s in res):
    print(
        f"DEFECT: a replica publishing no cache_config_info whose only fault is a /metrics slower than health_timeout_s is taken out: calls {res}"
    )
else:
    print("OK")
