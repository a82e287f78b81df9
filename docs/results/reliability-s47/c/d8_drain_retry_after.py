# ruff: noqa
"""Item 1: at the drain's end a call in progress is answered 503 shutting_down with `Retry-After: 1` fixed
(proxy/aiohttp_drain.py, as fast_server.py), whatever `retry_after_s` says (docs/config.md: 'Retry-After ...
on 429 (full queue) and 503 refusals'); the calls waiting in the proxy, refused in the same moment, get
retry_after_s. DEFECT when the in-progress call's Retry-After is not retry_after_s (7 here)."""

import sys, json, time, threading, socket, signal, os
import os, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LOGS = tempfile.mkdtemp(prefix="rev47c-")
sys.path.insert(0, HERE)
from h import *

reps = sims(1, 25240, scale=1)
bad = False
for i, server in enumerate(("aiohttp", "fast")):
    P = 25242 + i
    pp = proxy(P, reps, args=["--server", server, "--shutdown-grace-s", "1", "--retry-after-s", "7"], scale=1)
    time.sleep(1.5)
    fault(reps[0], {"kind": "hang", "duration_s": 8})
    out = {}

    def call():
        b = json.dumps(CHAT("w")).encode()
        c = socket.create_connection(("127.0.0.1", P))
        c.settimeout(15)
        c.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(b)
            + b
        )
        d = b""
        try:
            while True:
                x = c.recv(65536)
                if not x:
                    break
                d += x
        except Exception:
            pass
        out["r"] = d

    t = threading.Thread(target=call)
    t.start()
    time.sleep(1.0)
    os.killpg(pp.pid, signal.SIGTERM)
    t.join()
    pp.wait(timeout=15)
    head = out["r"].split(b"\r\n\r\n")[0].decode()
    ra = [l for l in head.split("\r\n") if l.lower().startswith("retry-after")]
    print(server, head.split("\r\n")[0], ra)
    if ra != ["Retry-After: 7"]:
        bad = True
    req(reps[0].rsplit(":", 1)[1] and int(reps[0].rsplit(":", 1)[1]), "/saga/v1/faults", method="DELETE")
    time.sleep(0.5)
print("DEFECT: the drain's-end 503 says Retry-After 1, not retry_after_s (7)" if bad else "OK")
