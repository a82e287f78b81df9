# ruff: noqa
"""GET /v1/responses/{id}?stream=true: a client that hangs up mid-stream must close the replica connection too."""

import os
from pathlib import Path

import asyncio, json, sys, time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *

EV = [
    b'event: response.output_text.delta\ndata: {"delta":"w","sequence_number":%d,"type":"response.output_text.delta"}\n\n'
    % i
    for i in range(40)
]


def handler(m, p, h, b):
    r = basic_routes(m, p, h, b)
    if r:
        return r
    if m == "POST":
        return whole(
            200,
            b'{"id":"resp_bg2","object":"response","status":"queued","background":true,"output":[],"usage":null}',
        )
    if "stream=true" in p:
        return stream(EV, delay=0.25)
    return whole(200, b'{"id":"resp_bg2","object":"response","status":"in_progress"}')


async def main():
    fake = Fake(26225, handler)
    await fake.start()
    px = Proxy(26023, ["http://127.0.0.1:26225"])
    try:
        await px.wait_ready()
        await raw(
            26023, post("/v1/responses", json.dumps({"model": "fake", "input": "x", "background": True}))
        )
        r, w = await asyncio.open_connection("127.0.0.1", 26023)
        w.write(b"GET /v1/responses/resp_bg2?stream=true HTTP/1.1\r\nHost: x\r\n\r\n")
        await w.drain()
        await r.readuntil(b"\r\n\r\n")
        got = b""
        while got.count(b"\n\n") < 2:
            got += await asyncio.wait_for(r.read(4096), 5)
        n = len(fake.closed_conns)
        t0 = time.time()
        w.transport.abort()
        t_up = None
        for _ in range(50):
            await asyncio.sleep(0.1)
            cl = [c for c in fake.closed_conns[n:] if c[1] and "stream=true" in c[1]]
            if cl:
                t_up = cl[0][0] - t0
                break
        if t_up is None:
            return "DEFECT: GET /v1/responses/{id}?stream=true: replica connection still open 5 s after the client hung up"
        return f"OK: GET /v1/responses/{{id}}?stream=true client hang-up closes the replica connection after {t_up:.2f}s"
    finally:
        px.stop()
        await fake.stop()


run(main)
