# ruff: noqa
"""Ordinary traffic, sequential, max_tokens 4: 200 anonymous one-shot chats; 40 conversations x 5 turns naming nothing;
40 conversations x 5 turns each with its own prompt_cache_key. Prints client p50 latency per kind and proxy CPU s. args: tree port"""

import sys, os, time, statistics, glob

sys.path.insert(0, "/tmp/reviewR")
from harness import stack, post_sync

SIM = ("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--time-scale", "20")
tree, port = sys.argv[1], int(sys.argv[2])


def proxy_cpu():
    tot = 0.0
    for p in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            c = open(p, "rb").read().split(b"\0")
            if b"serve" in c and str(port).encode() in c:
                f = open(p.replace("cmdline", "stat")).read().rsplit(")", 1)[1].split()
                tot += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except Exception:
            pass
    return tot


def b(m, key=None):
    d = {"model": "saga-sim", "max_tokens": 4, "ignore_eos": True, "messages": m}
    if key:
        d["prompt_cache_key"] = key
    return d


SYS = {"role": "system", "content": "You are a helpful assistant. " * 30}
with stack(tree, port - 10, port, sim_args=SIM) as url:
    res = {}
    c0 = proxy_cpu()
    lat = [
        post_sync(url, b([SYS, {"role": "user", "content": f"question {i}: " + "word " * 300}]))[3]
        for i in range(200)
    ]
    res["anon"] = lat
    for kind in ("multi", "key"):
        lat = []
        for i in range(40):
            m = [SYS, {"role": "user", "content": f"{kind} conversation {i} " + "word " * 300}]
            for t in range(5):
                d, s, _, l = post_sync(url, b(m, f"k-{i}" if kind == "key" else None))
                lat.append(l)
                m = m + [
                    d["choices"][0]["message"],
                    {"role": "user", "content": f"turn {t} " + "more " * 100},
                ]
        res[kind] = lat
    c1 = proxy_cpu()
    print(
        os.path.basename(tree),
        " ".join(f"{k} p50 {statistics.median(v) * 1000:.2f}ms" for k, v in res.items()),
        f"proxy CPU {c1 - c0:.2f}s for 600 calls",
    )
