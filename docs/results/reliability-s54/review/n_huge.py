# ruff: noqa
"""n=16384 (vLLM's maximum), max_tokens 8: wall time and proxy CPU per call, direct to the simulator vs through
the proxy (AFTER vs BEFORE, same simulator), whole and streamed; proxy RSS after."""

import os, sys, json, time, subprocess

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

N = int(os.environ.get("N", "16384"))


def cpu_rss(pp):
    pids = [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-f", f"proxy serve --port {pp} "], capture_output=True, text=True
        ).stdout.split()
    ]
    cpu = rss = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            cpu += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            rss += int(open(f"/proc/{p}/statm").read().split()[1]) * 4096
        except Exception:
            pass
    return cpu, rss / 2**20


out = {}
for j, name in enumerate(os.environ.get("TREES", "AFTER,BEFORE").split(",")):
    tree = {"AFTER": AFTER, "MID": MID, "BEFORE": BEFORE}[name]
    sp, pp = 26610 + 20 * j, 26600 + 20 * j
    with stack(tree, sp, pp, sim_args=("--profile", "tiny-cpu", "--time-scale", "50")) as url:
        for stream in (False, True):
            b = {
                "model": "saga-sim",
                "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": 8,
                "n": N,
                "temperature": 1.0,
                "ignore_eos": True,
                "stream": stream,
            }
            t = time.time()
            st, txt, _ = post(f"http://127.0.0.1:{sp}", b, timeout=600)
            direct = time.time() - t
            c0, r0 = cpu_rss(pp)
            t = time.time()
            st2, txt2, _ = post(url, b, timeout=600)
            via = time.time() - t
            c1, r1 = cpu_rss(pp)
            out[(name, stream)] = dict(
                status=st2,
                bytes=len(txt2),
                direct_s=round(direct, 2),
                proxy_s=round(via, 2),
                proxy_cpu_s=round(c1 - c0, 2),
                rss_mb=round(r1),
            )
            print(name, "stream" if stream else "whole", out[(name, stream)], flush=True)
a = [v for k, v in out.items() if k[0] == "AFTER"]
b = [v for k, v in out.items() if k[0] != "AFTER"]
bad = any(x["status"] != 200 for x in a) or any(
    x["proxy_cpu_s"] > 2 * y["proxy_cpu_s"] + 0.3 for x, y in zip(a, b)
)
print(
    "DEFECT" if bad else "OK",
    f"n={N}:",
    {
        f"{k[0]}-{'stream' if k[1] else 'whole'}": (v["proxy_s"], v["proxy_cpu_s"], v["rss_mb"])
        for k, v in out.items()
    },
    "(wall s, proxy cpu s, rss MB)",
)
