# ruff: noqa
"""SAGA_*_TIMEOUT_S=1e308 (accepted as finite) : does the proxy still answer a streamed and a whole call?"""

import os
from pathlib import Path

os.makedirs("/tmp/saga-review45a", exist_ok=True)

import asyncio, os, subprocess, sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sse_harness as h
from sse_harness import enc, sse

VAR = sys.argv[1] if len(sys.argv) > 1 else "SAGA_STREAM_IDLE_TIMEOUT_S"


def start_proxy(rport, pport, log):
    env = {**os.environ, VAR: "1e308"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--replica",
            f"http://127.0.0.1:{rport}",
            "--port",
            str(pport),
            "--policy",
            "round-robin",
            "--no-access-log",
        ],
        cwd=h.SNAP,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


h.start_proxy = start_proxy
ev = {
    "id": "c",
    "object": "chat.completion.chunk",
    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
}
stream = [sse(enc(ev)), b"data: [DONE]\n\n"]
out = asyncio.run(h.run({"s1": stream}, 25111, 25112))
st, got, _ = out.get("s1", (None, b"", b""))
log = open("/tmp/saga-review45a/proxy_25112.log").read()
if st != 200 or got != b"".join(stream) or "Traceback" in log:
    tail = [l for l in log.splitlines() if "Error" in l or "error" in l][:2]
    print(
        f"DEFECT: {VAR}=1e308 is accepted but a streamed call then fails: status {st}, body {got[:120]!r}, log {tail}"
    )
else:
    print(f"OK: {VAR}=1e308 accepted and a streamed call still relayed whole")
