# ruff: noqa: E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""X1: a DISCOVERED replica is removed through the admin API, then added again through it (recorded "added":
the admin API's now). The name then stops listing it. Contract: one the admin API added stays, whatever the
name resolves to. argv[1]: single | workers (workers: one worker restarted after the re-add)."""

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
PX, P = 28030, 28101
set_hosts("vllm.test", ["127.0.0.2", "127.0.0.3"])
for ip in ("127.0.0.2", "127.0.0.3"):
    fake(P, FAKE_HOST=ip)
d = f"http://127.0.0.2:{P}"
cfg = os.path.join(TMP, "cfg.json")
json.dump(
    {"health_interval_s": 0.3, "discovery": {"name": "vllm.test", "port": P, "interval_s": 1}}, open(cfg, "w")
)
extra = ["--policy", "round-robin"] + (["--workers", "2"] if mode == "workers" else [])
px = proxy(PX, [], extra=extra, config=cfg, log=os.path.join(TMP, "proxy.log"))
base = f"http://127.0.0.1:{PX}"
time.sleep(3)
print("before:", brief(base))
print("admin remove:", post(base + "/saga/v1/replicas/remove", {"url": d})[:2])
time.sleep(1.5)
print("after remove:", brief(base))
print("admin add:", post(base + "/saga/v1/replicas", {"url": d})[:2])
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
print(
    "after admin add:",
    brief(base),
    "record:",
    [open(os.path.join(r, f)).read() for r, _, fs in os.walk("/tmp") if False for f in fs],
)
set_hosts("vllm.test", ["127.0.0.3"])
time.sleep(4.5)
c = calls(base, 20, "x1", timeout=5)
rows = brief(base)
print("name lists only 127.0.0.3:", rows, "calls of 20 new sessions:", c)
stop(px)
log = open(os.path.join(TMP, "proxy.log")).read()
removed_by = len(re.findall(r"127\.0\.0\.2:\d+ no longer resolves", log))
print("'no longer resolves' lines for it:", removed_by)
n = c.get("127.0.0.2", 0)
if mode == "single" and (d not in rows or n == 0):
    print(
        f"DEFECT: single: {d} re-added through the admin API was removed by discovery once the name stopped listing it (0/20 sessions to it; contract: the admin API's replica stays)"
    )
elif mode == "workers" and removed_by == 1:  # (both keeping it, round-robin sends it half the calls too)
    print(
        f"DEFECT: workers: replica sets apart: {n}/20 new sessions still went to {d} (one worker kept it, the other removed it)"
    )
else:
    print("OK", n)
