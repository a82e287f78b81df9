# ruff: noqa
"""n>1 streams (chat and completions) whose client hangs up mid-stream: are all the replica's engine requests
aborted (simulator vllm:num_requests_running back to 0) and the proxy's accounting released (in_flight 0)?"""

import os, sys, json, re, socket, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

TREE = os.environ.get("TREE", AFTER)
W = int(os.environ.get("WORKERS", "1"))
N = int(os.environ.get("N", "8"))


def running(sp):
    t = 0.0
    for i in range(2):
        m = urllib.request.urlopen(f"http://127.0.0.1:{sp + i}/metrics").read().decode()
        for line in m.splitlines():
            if line.startswith("vllm:num_requests_running") or line.startswith("vllm:num_requests_waiting"):
                t += float(line.split()[-1])
    return t


def drop(url, path, body, nbytes=4000):
    host, port = url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)))
    data = json.dumps(body).encode()
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    got = b""
    while len(got) < nbytes:
        c = s.recv(65536)
        if not c:
            break
        got += c
    s.close()
    return got


sp, pp = 26110 + 20 * W, 26100 + 20 * W
with stack(TREE, sp, pp, workers=W, sim_args=("--time-scale", "1", "--profile", "tiny-cpu")) as url:
    res = []
    for path in ("/v1/chat/completions", "/v1/completions"):
        for k in range(3):
            body = {
                "model": "saga-sim",
                "max_tokens": 1500,
                "ignore_eos": True,
                "stream": True,
                "n": N,
                "temperature": 1.0,
            }
            if path == "/v1/chat/completions":
                body["messages"] = [{"role": "user", "content": f"write {k} a long story"}]
            else:
                body["prompt"] = f"write {k} a long story"
            got = drop(url, path, body)
            time.sleep(0.3)
        time.sleep(1.5)
        r = running(sp)
        reps = get(url + "/saga/v1/replicas")
        inflight = sum(x["in_flight"] for x in (reps if isinstance(reps, list) else reps.get("replicas", [])))
        res.append((path, r, inflight, len(got)))
        print(
            path,
            "sim running+waiting after drops:",
            r,
            "proxy in_flight:",
            inflight,
            "bytes got",
            len(got),
            flush=True,
        )
bad = any(r[1] or r[2] for r in res)
print(
    "DEFECT" if bad else "OK",
    f"{os.path.basename(TREE)} w={W} n={N}: after 3 dropped n-streams per route, sim engine requests left / proxy in_flight:",
    [(r[0], r[1], r[2]) for r in res],
)
