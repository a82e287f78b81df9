# ruff: noqa
"""Change 1: a call with n>1 is not a replica speed sample (proxy/scheduler/core.py). Sessions bound to replica A
make n=16 calls, sessions bound to replica B n=1 calls, one at a time; then each replica's `slowness`
(/saga/v1/replicas). Alike replicas: expect 1.0 both (BEFORE: B looks ~16x slower)."""

import os, sys, json, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *
import http.client

res = {}
FORM = os.environ.get(
    "NFORM", "int"
)  # int | str | float: how n=16 is written (vLLM accepts "16" and 16.0 alike)
NFORM = {"int": int, "str": str, "float": float}[FORM]
for j, name in enumerate(os.environ.get("TREES", "AFTER,BEFORE").split(",")):
    tree = {"AFTER": AFTER, "MID": MID, "BEFORE": BEFORE}[name]
    with stack(
        tree, 26870 + 10 * j, 26865 + 10 * j * 0 + j, sim_args=("--profile", "tiny-cpu", "--time-scale", "20")
    ) as url:
        host = url.split("//")[1]

        def call(sid, n, mt=24):
            c = http.client.HTTPConnection(host, timeout=60)
            b = {
                "model": "saga-sim",
                "messages": [{"role": "user", "content": "q " + sid}],
                "max_tokens": mt,
                "n": (NFORM(n) if n > 1 else n),
                "temperature": 1.0,
                "ignore_eos": True,
            }
            c.request(
                "POST",
                "/v1/chat/completions",
                body=json.dumps(b),
                headers={"Content-Type": "application/json", "X-Session-ID": sid},
            )
            r = c.getresponse()
            r.read()
            return r.getheader("X-Saga-Replica")

        place = {}
        for i in range(12):
            place[f"s{i}-{j}"] = call(f"s{i}-{j}", 1)
        reps = sorted(set(place.values()))
        A = [s for s, r in place.items() if r == reps[0]]
        B = [s for s, r in place.items() if r == reps[-1]]
        for rnd in range(14):
            call(A[rnd % len(A)], 16)
            call(B[rnd % len(B)], 1)
        rows = get(url + "/saga/v1/replicas")
        rows = rows if isinstance(rows, list) else rows.get("replicas", [])
        sl = {r["replica_id"][-5:]: r["slowness"] for r in rows}
        res[name] = sl
        print(
            name,
            "replicas used",
            reps,
            "A sessions",
            len(A),
            "B sessions",
            len(B),
            "slowness",
            sl,
            flush=True,
        )
bad = any(v != 1.0 for v in res.get("AFTER", {}).values())
print("DEFECT" if bad else "OK", f"n written as {FORM}:", "slowness after n=16 calls on A, n=1 on B:", res)
