# ruff: noqa
"""A body over max_body_bytes: the same answer and the same saga_errors_total cause on both servers."""

import sys, json, time, socket
import os, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LOGS = tempfile.mkdtemp(prefix="rev47c-")
sys.path.insert(0, HERE)
from h import *

reps = sims(1, 25500)
res = {}
for i, server in enumerate(("fast", "aiohttp")):
    P = 25502 + i
    proxy(P, reps, args=["--server", server, "--max-body-bytes", "1000"])
    time.sleep(1.2)
    big = json.dumps(CHAT("x" * 3000)).encode()
    out = []
    for path in ("/v1/chat/completions", "/tokenize", "/v1/embeddings"):
        s, h_, b = req(P, path, big)
        out.append((path, s, json.loads(b)["error"].get("code"), json.loads(b)["error"]["message"]))
    _, _, m = req(P, "/metrics")
    causes = sorted(l for l in m.decode().splitlines() if l.startswith("saga_errors_total{"))
    res[server] = (out, causes)
    print(server, out, causes)
if res["fast"][1] != res["aiohttp"][1]:
    print("DEFECT: saga_errors_total differs:", res["fast"][1], "vs", res["aiohttp"][1])
else:
    print("OK: same counts")
if [o[1:] for o in res["fast"][0]] != [o[1:] for o in res["aiohttp"][0]]:
    print("DEFECT: answers differ")
else:
    print("OK: same answers")
