# ruff: noqa: E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""A3: `--workers 2`, a discovered replica drained through the admin API (every worker drains it; the change is
recorded for restarted workers). One worker dies and the supervisor restarts it: does it keep the drain?"""

import json
import os
import signal
import subprocess
import time

from acommon import brief, calls, set_hosts
from common import TMP, fake, post, proxy

PX, P = 26130, 26101
set_hosts("vllm.test", ["127.0.0.2", "127.0.0.3"])
for ip in ("127.0.0.2", "127.0.0.3"):
    fake(P, FAKE_HOST=ip)
d = f"http://127.0.0.2:{P}"
cfg = os.path.join(TMP, "cfg.json")
json.dump(
    {"health_interval_s": 0.3, "discovery": {"name": "vllm.test", "port": P, "interval_s": 1}}, open(cfg, "w")
)
px = proxy(PX, [], extra=["--workers", "2"], config=cfg, log=os.path.join(TMP, "proxy.log"))
base = f"http://127.0.0.1:{PX}"
time.sleep(3)
print("drain:", post(base + "/saga/v1/replicas/drain", {"url": d})[:2])
time.sleep(0.5)
c1 = calls(base, 20, "a3a")
print("drained, both workers:", brief(base), "new sessions' calls:", c1)
kids = subprocess.run(
    ["ps", "-o", "pid=", "--ppid", str(px.pid)], capture_output=True, text=True
).stdout.split()
print("workers:", kids)
os.kill(int(kids[0]), signal.SIGKILL)
time.sleep(5)
kids2 = subprocess.run(
    ["ps", "-o", "pid=", "--ppid", str(px.pid)], capture_output=True, text=True
).stdout.split()
print("workers after restart:", kids2)
c2 = calls(base, 20, "a3b")
print("after a worker restart:", brief(base), "new sessions' calls:", c2)
if c1.get("127.0.0.2", 0) == 0 and c2.get("127.0.0.2", 0) > 0:
    print(
        f"DEFECT: after a worker restart, {c2['127.0.0.2']} of 20 new sessions' calls went to drained replica {d}"
    )
else:
    print("OK")
