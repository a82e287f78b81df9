# ruff: noqa
"""Sequential one-shot chat calls naming no session, each a distinct prompt: prints the total time and the calls over 1 s.
Usage: python3 sequential_one_shots.py PROXY_PORT CALLS"""

import json, sys, time, urllib.request

port = int(sys.argv[1])
n = int(sys.argv[2])
conc_sess = len(sys.argv) > 3
slow = []
t0 = time.time()
for i in range(n):
    body = {
        "model": "saga-sim",
        "messages": [{"role": "user", "content": f"question number {i}: what is {i} squared? " * 5}],
        "max_tokens": 8,
    }
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    t = time.time()
    with urllib.request.urlopen(req, timeout=200) as r:
        r.read()
    dt = time.time() - t
    if dt > 1:
        slow.append((i, round(dt, 1)))
print("calls", n, "total", round(time.time() - t0, 1), "s; slow:", slow[:10])
