# ruff: noqa: E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""B4: a replica whose KV events said session sA has 3 blocks cached restarts (its prefix cache is empty; a
restarted vLLM publishes nothing until it caches something). The proxy saw it down, then up again."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HERE, TMP, chat, fake, get, proxy, replicas, start, stop

PX, REP, ZMQP = 26030, 26031, 26032
url = f"http://127.0.0.1:{REP}"
cfg = os.path.join(TMP, "cfg.json")
json.dump(
    {
        "health_interval_s": 0.2,
        "kv_events": {"discover": False, "endpoints": {url: f"tcp://127.0.0.1:{ZMQP}"}},
    },
    open(cfg, "w"),
)
sp = os.path.join(TMP, "s1.json")
json.dump([{"sleep": 0.5}, {"events": [["S", "sA", [1, 2, 3], None]]}], open(sp, "w"))
sp2 = os.path.join(TMP, "s2.json")
json.dump([], open(sp2, "w"))  # the restarted replica: idle, publishes nothing
fp = fake(REP)
pub = start(
    [sys.executable, os.path.join(HERE, "kvscript.py"), f"tcp://127.0.0.1:{ZMQP}", sp],
    log=os.path.join(TMP, "pub.log"),
)
px = proxy(PX, [url], config=cfg, log=os.path.join(TMP, "proxy.log"))
base = f"http://127.0.0.1:{PX}"
s, *_ = chat(base, sid="sA")
assert s == 200
time.sleep(2.0)


def res():
    ss = {
        x["session_id"]: x.get("kv_resident")
        for x in json.loads(get(base + "/saga/v1/sessions")[1])["sessions"]
    }
    r = replicas(base)[0]
    return ss.get("sA"), r["healthy"], r["kv_events"]["cached_blocks"], r["kv_events"]["batches"]


print("before restart: sA kv_resident, healthy, cached_blocks, batches =", res())
stop(fp)
stop(pub)
time.sleep(2.0)
print("replica down:", res())
fp = fake(REP)
pub = start(
    [sys.executable, os.path.join(HERE, "kvscript.py"), f"tcp://127.0.0.1:{ZMQP}", sp2],
    log=os.path.join(TMP, "pub2.log"),
)
time.sleep(3.0)
ra = res()
print("restarted, up, cache empty:", ra)
tok = (ra[0] or {}).get(url, 0)
if ra[1] and tok > 0:
    print(
        f"DEFECT: after the replica restarted (empty cache) sA still counts {tok} tokens resident there ({ra[2]} cached blocks listed)"
    )
else:
    print("OK")
