# ruff: noqa: E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""X2: a configured replica the name lists is removed through the admin API (stays out while listed). One
resolution misses it (one DNS answer without the pod), then the name lists it again. argv[1]: single | workers
(workers: one worker restarted after the removal)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

from acommon import brief, calls, set_hosts
from common import TMP, fake, post, proxy, stop

mode = sys.argv[1] if len(sys.argv) > 1 else "single"
PX, P = 28040, 28111
set_hosts("vllm.test", ["127.0.0.2", "127.0.0.3"])
for ip in ("127.0.0.2", "127.0.0.3"):
    fake(P, FAKE_HOST=ip)
d = f"http://127.0.0.2:{P}"
cfg = os.path.join(TMP, "cfg.json")
json.dump(
    {"health_interval_s": 0.3, "discovery": {"name": "vllm.test", "port": P, "interval_s": 2}}, open(cfg, "w")
)
extra = ["--policy", "round-robin"] + (["--workers", "2"] if mode == "workers" else [])
px = proxy(PX, [d], extra=extra, config=cfg, log=os.path.join(TMP, "proxy.log"))
base = f"http://127.0.0.1:{PX}"
time.sleep(3)
print("before:", brief(base))
print("admin remove:", post(base + "/saga/v1/replicas/remove", {"url": d})[:2])
time.sleep(1.0)
if mode == "workers":
    kids = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(px.pid)], capture_output=True, text=True
    ).stdout.split()
    os.kill(int(kids[0]), signal.SIGKILL)
    time.sleep(5)
    kids2 = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(px.pid)], capture_output=True, text=True
    ).stdout.split()
    print("workers", kids, "->", kids2)
time.sleep(2.5)
print("after remove (listed):", brief(base))
set_hosts("vllm.test", ["127.0.0.3"])
time.sleep(1.9)  # less than one interval: each worker's resolutions miss it at most once
set_hosts("vllm.test", ["127.0.0.2", "127.0.0.3"])
time.sleep(4.5)
c = calls(base, 20, "x2", timeout=5)
rows = brief(base)
print("listed again:", rows, "calls of 20 new sessions:", c)
stop(px)
log = open(os.path.join(TMP, "proxy.log")).read()
print("'discovered' lines for it:", len(re.findall(r"127\.0\.0\.2:\d+ discovered", log)))
n = c.get("127.0.0.2", 0)
if mode == "single" and n:
    print(
        f"DEFECT: single: {d} removed through the admin API came back after ONE resolution missed it ({n}/20 new sessions; a discovered replica needs {2} misses)"
    )
elif mode == "workers" and 0 < n < 20:
    print(
        f"DEFECT: workers: replica sets apart after one missed resolution: {n}/20 new sessions went to admin-removed {d}"
    )
else:
    print("OK", n)
