# ruff: noqa: E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""A1: a replica configured statically (`replicas:`) that the discovery name also resolves to; the name then
stops listing it (the pod set moved on; the static replica is outside the service)."""

import json
import os
import time

from acommon import brief, calls, set_hosts
from common import TMP, fake, proxy

PX, P = 26110, 26101
set_hosts("vllm.test", ["127.0.0.2", "127.0.0.3"])
for ip in ("127.0.0.2", "127.0.0.3"):
    fake(P, FAKE_HOST=ip)
static = f"http://127.0.0.2:{P}"
cfg = os.path.join(TMP, "cfg.json")
json.dump(
    {
        "replicas": [static],
        "health_interval_s": 0.3,
        "discovery": {"name": "vllm.test", "port": P, "interval_s": 1},
    },
    open(cfg, "w"),
)
px = proxy(PX, [], config=cfg, log=os.path.join(TMP, "proxy.log"))
base = f"http://127.0.0.1:{PX}"
time.sleep(2)
print("both resolve:", brief(base))
set_hosts("vllm.test", ["127.0.0.3"])
time.sleep(2.5)
b = brief(base)
print("name lists .3 only:", b)
print("calls:", calls(base, 10, "a1"))
if static not in b:
    print(
        f"DEFECT: statically configured replica {static} removed from routing because discovery stopped listing it"
    )
else:
    print("OK")
