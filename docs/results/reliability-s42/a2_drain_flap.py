# ruff: noqa: E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""A2: an operator drains a discovered replica (admin API); the name misses it for one resolution (a pod
briefly not ready / a DNS answer missing one record) and lists it again."""

import json
import os
import time

from acommon import brief, calls, set_hosts
from common import TMP, fake, post, proxy

PX, P = 26120, 26101
set_hosts("vllm.test", ["127.0.0.2", "127.0.0.3"])
for ip in ("127.0.0.2", "127.0.0.3"):
    fake(P, FAKE_HOST=ip)
d = f"http://127.0.0.2:{P}"
cfg = os.path.join(TMP, "cfg.json")
json.dump(
    {"health_interval_s": 0.3, "discovery": {"name": "vllm.test", "port": P, "interval_s": 1}}, open(cfg, "w")
)
px = proxy(PX, [], config=cfg, log=os.path.join(TMP, "proxy.log"))
base = f"http://127.0.0.1:{PX}"
time.sleep(2)
print("drain:", post(base + "/saga/v1/replicas/drain", {"url": d})[:2])
print("drained:", brief(base), "new sessions' calls:", calls(base, 10, "a2a"))
set_hosts("vllm.test", ["127.0.0.3"])
time.sleep(1.6)
print("missing once:", brief(base))
set_hosts("vllm.test", ["127.0.0.2", "127.0.0.3"])
time.sleep(2.5)
b = brief(base)
c = calls(base, 10, "a2b")
print("listed again:", b, "new sessions' calls:", c)
if d in b and not b[d]["draining"] and c.get("127.0.0.2", 0) > 0:
    print(
        f"DEFECT: drained replica {d} came back undrained after one missed resolution: {c.get('127.0.0.2')} of 10 new sessions sent there"
    )
else:
    print("OK")
