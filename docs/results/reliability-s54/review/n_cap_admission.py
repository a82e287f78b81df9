# ruff: noqa
"""max_tokens x n (change 1, proxy/calls.py): a call asking n choices whose n*max_tokens exceeds a replica's KV
(tiny-cpu: 4096 tokens) but which vLLM serves (each sequence <= max-model-len 2048). Cases:
 first   : a session's first call, n=8, max_tokens=600 (4800 > 4096)
 beside  : a second call of a named session sent while its first (n=1, long) runs: n=8, max_tokens=600
 beside1 : same with n=1 (reference)
Latency of the measured call and where it ran, per tree."""

import os, sys, json, time, threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

TREES = [t for t in os.environ.get("TREES", "AFTER,BEFORE").split(",")]
N = int(os.environ.get("N", "8"))
MT = int(os.environ.get("MT", "600"))
res = {}
for j, name in enumerate(TREES):
    tree = {"AFTER": AFTER, "MID": MID, "BEFORE": BEFORE}[name]
    with stack(
        tree, 26510 + 20 * j, 26500 + 20 * j, sim_args=("--profile", "tiny-cpu", "--time-scale", "5")
    ) as url:

        def call(sid, n, mt, out=None):
            b = {
                "model": "saga-sim",
                "messages": [{"role": "user", "content": f"go {sid} " * 20}],
                "max_tokens": mt,
                "n": n,
                "temperature": 1.0,
                "ignore_eos": True,
            }
            t = time.time()
            st, txt, s = post(url, b, headers={"X-Session-ID": sid}, timeout=300)
            r = (st, round(time.time() - t, 2))
            if out is not None:
                out.append(r)
            return r

        res[(name, "first")] = call(f"first-{j}", N, MT)
        for case, n in (("beside1", 1), ("beside", N)):
            sid = f"{case}-{j}"
            out = []
            t1 = threading.Thread(target=call, args=(sid, 1, 1500, out))
            t1.start()
            time.sleep(0.5)
            res[(name, case)] = call(sid, n, MT)
            t1.join()
            res[(name, case + "_long")] = out[0]
        for k, v in res.items():
            if k[0] == name:
                print(k, v, flush=True)
a = {k[1]: v for k, v in res.items() if k[0] == "AFTER"}
b = {k[1]: v for k, v in res.items() if k[0] != "AFTER"}
worse = [c for c in a if a[c][0] != 200 or (c in b and a[c][1] > 1.5 * b[c][1] + 0.5)]
print(
    "DEFECT" if worse else "OK", f"n={N} max_tokens={MT}: AFTER", a, "| other", b, "| worse on AFTER:", worse
)
