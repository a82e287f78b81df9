# ruff: noqa
"""A body over max_body_bytes on the call routes: the client (python-requests, as SDKs send: whole body, then read)
should get the 413 error body, not a connection reset."""

import os
from pathlib import Path

import asyncio, json, sys, time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *
import requests


async def main():
    px = Proxy(26005, [], ["--simulate", "1", "--max-body-bytes", "1000000", "--time-scale", "50"])
    try:
        await px.wait_ready()
        res = []
        for route in ("/v1/messages", "/v1/responses", "/v1/completions", "/v1/chat/completions"):
            body = json.dumps(
                {
                    "model": "saga-sim",
                    "max_tokens": 3,
                    "prompt": "a" * 3_000_000,
                    "input": "x",
                    "messages": [{"role": "user", "content": "x"}],
                }
            )
            ok = 0
            resets = 0
            other = []
            for i in range(3):
                try:
                    r = await asyncio.to_thread(
                        requests.post,
                        f"http://127.0.0.1:26005{route}",
                        data=body,
                        headers={"Content-Type": "application/json"},
                        timeout=10,
                    )
                    if r.status_code == 413:
                        ok += 1
                    else:
                        other.append(r.status_code)
                except requests.exceptions.ConnectionError as e:
                    resets += 1
            res.append((route, ok, resets, other))
        inf = await in_flight(26005)
        if any(r[2] for r in res):
            return f"DEFECT: body over max_body_bytes (3 MB vs 1 MB limit), python-requests: (route, got 413, connection errors, other) = {res}; the 413 is lost to a TCP reset since the proxy closes without draining the body; in_flight {inf}"
        return f"OK: oversize body answered 413 each time: {res}"
    finally:
        px.stop()


run(main)
