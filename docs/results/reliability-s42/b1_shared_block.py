# ruff: noqa: E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""B1: two sessions whose concurrent first calls both computed a shared 2-block system prompt (vLLM does not
de-duplicate: each request's BlockStored names h1,h2 with parent None, and each copy's eviction is its own
BlockRemoved). After every copy is evicted, the replica caches nothing; what does the proxy say?"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HERE, TMP, chat, fake, get, proxy, replicas, start

PX, REP, ZMQP = 26010, 26011, 26012
url = f"http://127.0.0.1:{REP}"
fake(REP)
cfg = os.path.join(TMP, "cfg.json")
json.dump({"kv_events": {"discover": False, "endpoints": {url: f"tcp://127.0.0.1:{ZMQP}"}}}, open(cfg, "w"))
go = os.path.join(TMP, "go")
script = [
    {"wait_file": go},
    {"events": [["S", "sA", [1, 2, 3], None]]},  # A: system prompt h1,h2 + its own block 3
    {"events": [["S", "sB", [1, 2, 4], None]]},  # B, computed concurrently: its own copies of h1,h2 + block 4
    {"sleep": 0.5},
    {"wait_file": go + "2"},
    {"events": [["R", [3]], ["R", [2]], ["R", [1]]]},  # A's copies evicted (tail first)
    {"events": [["R", [4]], ["R", [2]], ["R", [1]]]},  # B's copies evicted: nothing cached any more
]
sp = os.path.join(TMP, "script.json")
json.dump(script, open(sp, "w"))
start(
    [sys.executable, os.path.join(HERE, "kvscript.py"), f"tcp://127.0.0.1:{ZMQP}", sp],
    log=os.path.join(TMP, "pub.log"),
)
px = proxy(PX, [url], config=cfg, log=os.path.join(TMP, "proxy.log"))
base = f"http://127.0.0.1:{PX}"
for sid in ("sA", "sB"):
    s, *_ = chat(base, sid=sid)
    assert s == 200, s
time.sleep(1.5)  # subscribed
open(go, "w").close()
time.sleep(1.0)


def res():
    ss = {
        x["session_id"]: x.get("kv_resident")
        for x in json.loads(get(base + "/saga/v1/sessions")[1])["sessions"]
    }
    kv = replicas(base)[0]["kv_events"]
    return ss, kv


ss, kv = res()
print("after stores:", ss, "cached_blocks", kv and kv["cached_blocks"], "batches", kv and kv["batches"])
open(go + "2", "w").close()
time.sleep(1.0)
ss, kv = res()
print(
    "after every copy evicted:",
    ss,
    "cached_blocks",
    kv["cached_blocks"],
    "batches",
    kv["batches"],
    "gaps",
    kv["gaps"],
)
a = ss.get("sA", {}).get(url, 0)
if kv["batches"] != 4:
    print("INCONCLUSIVE: batches", kv["batches"])
elif a > 0:
    print(
        f"DEFECT: session sA counted {a} tokens resident on {url} after every block it stored was evicted (replica cached_blocks={kv['cached_blocks']})"
    )
else:
    print("OK")
