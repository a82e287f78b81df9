# ruff: noqa: E402, E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""D2: --workers 2, DNS discovery lists two replicas. A discovered replica is drained, then undrained through the
admin API (POST /saga/v1/replicas: recorded as "added"). One worker is restarted (it replays "added"). Then the
name stops listing that replica (a pod taken out of the service, still running). Do both workers remove it?"""

import json
import os
import signal
import subprocess
import time

from acommon import brief, calls, set_hosts
from common import TMP, fake, post, proxy, stop

PX, P = 27040, 27111
set_hosts("vllm.test", ["127.0.0.2", "127.0.0.3"])
for ip in ("127.0.0.2", "127.0.0.3"):
    fake(P, FAKE_HOST=ip)
d = f"http://127.0.0.2:{P}"
cfg = os.path.join(TMP, "cfg.json")
json.dump(
    {"health_interval_s": 0.3, "discovery": {"name": "vllm.test", "port": P, "interval_s": 1}}, open(cfg, "w")
)
px = proxy(
    PX,
    [],
    extra=["--workers", "2", "--policy", "round-robin"],
    config=cfg,
    log=os.path.join(TMP, "proxy.log"),
)
base = f"http://127.0.0.1:{PX}"
time.sleep(3)
print("drain:", post(base + "/saga/v1/replicas/drain", {"url": d})[:2])
time.sleep(0.5)
print("undrain:", post(base + "/saga/v1/replicas", {"url": d})[:2])
time.sleep(0.5)
kids = subprocess.run(
    ["ps", "-o", "pid=", "--ppid", str(px.pid)], capture_output=True, text=True
).stdout.split()
os.kill(int(kids[0]), signal.SIGKILL)
time.sleep(5)
kids2 = subprocess.run(
    ["ps", "-o", "pid=", "--ppid", str(px.pid)], capture_output=True, text=True
).stdout.split()
print("workers", kids, "->", kids2)
c0 = calls(base, 20, "d2a", timeout=5)
print("after restart, both listed:", brief(base), "calls:", c0)
set_hosts("vllm.test", ["127.0.0.3"])
time.sleep(4.5)  # ~4 resolutions without it
c = calls(base, 20, "d2b", timeout=5)
print("name lists only 127.0.0.3:", brief(base), "calls of 20 new sessions:", c)
stop(px)
if c.get("127.0.0.2", 0):
    print(
        f"DEFECT: after the name stopped listing {d}, {c['127.0.0.2']}/20 new sessions still went to it (the restarted worker took it for an admin-added replica)"
    )
else:
    print("OK")
import re

log = open(os.path.join(TMP, "proxy.log")).read()
print(
    "log: 'no longer resolves' lines for it:",
    len(re.findall(r"127\.0\.0\.2:\d+ no longer resolves", log)),
    "(one per worker expected: 2)",
)
