# ruff: noqa: E402, E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""A replica whose /metrics stops answering (health OK) keeps its last load figures forever in the proxy's view
(docs: 'leaves the replica's load and KV capacity unknown for that round')."""

import json
import os
import sys
import time

os.environ.setdefault("SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common as C

ctlA, ctlB = f"{C.TMP}/a.json", f"{C.TMP}/b.json"
json.dump({"waiting": 40, "running": 8, "kv": 0.95}, open(ctlA, "w"))
json.dump({}, open(ctlB, "w"))
A, B, P = 25201, 25202, 25200
for port, ctl in ((A, ctlA), (B, ctlB)):
    C.start([sys.executable, f"{HERE}/ctl_fake.py", str(port), ctl])
    C.wait_http(f"http://127.0.0.1:{port}/health")
base = f"http://127.0.0.1:{P}"
C.proxy(
    P,
    [f"http://127.0.0.1:{A}", f"http://127.0.0.1:{B}"],
    extra=["--health-interval-s", "0.3", "--health-timeout-s", "1"],
)
time.sleep(1.0)


def row():
    return next(r for r in C.replicas(base) if r["replica_id"].endswith(str(A)))


r0 = row()
print(
    "A while /metrics says waiting=40:", {k: r0.get(k) for k in ("healthy", "waiting", "running", "kv_usage")}
)
json.dump({"metrics": sys.argv[1] if len(sys.argv) > 1 else "500"}, open(ctlA, "w"))
time.sleep(4.0)
r1 = row()
print("A 4 s after /metrics fails:", {k: r1.get(k) for k in ("healthy", "waiting", "running", "kv_usage")})
hits = {}
for i in range(20):
    s, dt, b, h = C.chat(base, content=f"q{i}")
    hits[h.get("X-Fake")] = hits.get(h.get("X-Fake"), 0) + 1
print("calls per replica (A idle, B idle):", hits)
if r1.get("healthy") and r1.get("waiting") == 40:
    print("DEFECT: replica with failing /metrics still shows waiting=40 (stale), not unknown")
else:
    print("OK")
