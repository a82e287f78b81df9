# ruff: noqa: E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""D1: a replica the configuration (or the admin API) holds, which the discovery name also lists, is removed
through the admin API. The contract: "A replica removed through the admin API stays removed while its address
still resolves." Does the next resolution bring it back?  argv[1]: configured | admin"""

import json
import os
import sys
import time

from acommon import brief, calls, set_hosts
from common import TMP, fake, post, proxy, stop

how = sys.argv[1] if len(sys.argv) > 1 else "configured"
PX, P = 27030, 27101
set_hosts("vllm.test", ["127.0.0.2", "127.0.0.3"])
for ip in ("127.0.0.2", "127.0.0.3"):
    fake(P, FAKE_HOST=ip)
d = f"http://127.0.0.2:{P}"
cfg = os.path.join(TMP, "cfg.json")
json.dump(
    {"health_interval_s": 0.3, "discovery": {"name": "vllm.test", "port": P, "interval_s": 1}}, open(cfg, "w")
)
if how == "configured":
    px = proxy(PX, [d], config=cfg, log=os.path.join(TMP, "proxy.log"))
else:
    set_hosts("vllm.test", ["127.0.0.3"])
    px = proxy(PX, [], config=cfg, log=os.path.join(TMP, "proxy.log"))
base = f"http://127.0.0.1:{PX}"
if how == "admin":
    time.sleep(1.5)
    print("admin add:", post(base + "/saga/v1/replicas", {"url": d})[:2])
    time.sleep(0.5)
    set_hosts("vllm.test", ["127.0.0.2", "127.0.0.3"])
time.sleep(2)
print("before:", brief(base))
print("admin remove:", post(base + "/saga/v1/replicas/remove", {"url": d})[:2])
time.sleep(0.2)
after0 = brief(base)
print("just after remove:", after0)
time.sleep(4)  # ~4 resolutions; the name still lists both
after = brief(base)
c = calls(base, 20, "d1")
print("3 s later:", after, "calls of 20 new sessions:", c)
stop(px)
if d in after or c.get("127.0.0.2", 0):
    print(
        f"DEFECT: {how} replica {d} removed through the admin API is back while its address still resolves ({c.get('127.0.0.2', 0)}/20 new sessions sent to it)"
    )
else:
    print("OK")
