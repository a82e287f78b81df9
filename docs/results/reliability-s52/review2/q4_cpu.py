# ruff: noqa
"""CPU cost: after one long anonymous answer is filed, 30 anonymous first calls whose first and last user
messages are long multi-line texts (LINES lines of 60 chars each, 4 user messages). Proxy CPU seconds
(utime+stime of its process group) and client latency p50. args: tree port lines"""

import sys, os, time, statistics, subprocess

sys.path.insert(0, "/tmp/reviewQ")
from harness import stack, post_sync

tree, port, LINES = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
SIM = ("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--time-scale", "20")


def cpu(pgid):
    tot = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
                if int(f[2]) == pgid:
                    tot += int(f[11]) + int(f[12])
            except Exception:
                pass
    return tot / os.sysconf("SC_CLK_TCK")


with stack(tree, port - 10, port, sim_args=SIM) as url:
    out = subprocess.run(["ps", "-eo", "pgid,args"], capture_output=True, text=True).stdout
    pgid = int([l for l in out.splitlines() if f"--port {port}" in l and "serve" in l][0].split()[0])
    post_sync(
        url,
        {
            "model": "saga-sim",
            "max_tokens": 60,
            "ignore_eos": True,
            "messages": [{"role": "user", "content": "warm up"}],
        },
    )
    lats = []
    c0 = cpu(pgid)
    for i in range(30):
        text = "\n".join(f"line {j:06d} of call {i:03d} " + "y" * 34 for j in range(LINES))
        msgs = [
            {"role": "user", "content": text},
            {"role": "user", "content": text + "a"},
            {"role": "user", "content": text + "b"},
            {"role": "user", "content": text + "c"},
        ]
        t = time.time()
        try:
            post_sync(url, {"model": "saga-sim", "max_tokens": 1, "messages": msgs})
        except Exception as e:
            pass  # the replica refuses an over-long prompt (400): the proxy's work is done by then
        lats.append(time.time() - t)
    c1 = cpu(pgid)
    print(
        f"{os.path.basename(tree)} lines/message {LINES} ({len(text) // 1024} KiB x4): proxy CPU {c1 - c0:.2f}s for 30 calls; latency p50 {statistics.median(lats) * 1000:.1f} ms"
    )
