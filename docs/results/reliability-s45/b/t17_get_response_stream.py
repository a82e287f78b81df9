# ruff: noqa
"""GET /v1/responses/{id}?stream=true&starting_after=N (vLLM's resumable stream of a background response): the
query must reach the replica and the events must be relayed as they come (not held until the end)."""

import os
from pathlib import Path

import asyncio, json, sys, time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *

EV = [
    b'event: response.output_text.delta\ndata: {"content_index":0,"delta":"w%d","item_id":"msg_1","output_index":0,"sequence_number":%d,"type":"response.output_text.delta"}\n\n'
    % (i, i)
    for i in range(3, 9)
]
EV.append(
    b'event: response.completed\ndata: {"response":{"id":"resp_bg1","object":"response","status":"completed","output":[],"usage":{"input_tokens":3,"output_tokens":6,"total_tokens":9}},"sequence_number":9,"type":"response.completed"}\n\n'
)


def handler(m, p, h, b):
    r = basic_routes(m, p, h, b)
    if r:
        return r
    if m == "POST" and p == "/v1/responses":
        return whole(
            200,
            b'{"id":"resp_bg1","object":"response","status":"queued","background":true,"output":[],"usage":null}',
        )
    if m == "GET" and p.startswith("/v1/responses/resp_bg1"):
        if "stream=true" in p:
            return stream(EV, delay=0.4)
        return whole(200, b'{"id":"resp_bg1","object":"response","status":"in_progress"}')
    return whole(404, b'{"error":{"message":"nf","type":"NotFoundError","param":null,"code":404}}')


async def main():
    fake = Fake(26219, handler)
    await fake.start()
    px = Proxy(26017, ["http://127.0.0.1:26219"])
    try:
        await px.wait_ready()
        probs = []
        st, h, b = await raw(
            26017, post("/v1/responses", json.dumps({"model": "fake", "input": "x", "background": True}))
        )
        r, w = await asyncio.open_connection("127.0.0.1", 26017)
        t0 = time.time()
        w.write(
            b"GET /v1/responses/resp_bg1?stream=true&starting_after=2 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
        t_head = time.time() - t0
        arr = []
        hd = head.decode().lower()
        if "content-length" in hd:
            n = int(hd.split("content-length:")[1].split("\r\n")[0])
            body = await r.readexactly(n)
            arr.append((time.time() - t0, body))
        else:
            body = await asyncio.wait_for(
                read_chunked(r, on_chunk=lambda c: arr.append((time.time() - t0, c))), 15
            )
        w.close()
        up = [p for m, p, hh, bb in fake.requests if m == "GET"]
        if not up or "stream=true" not in up[-1] or "starting_after=2" not in up[-1]:
            probs.append(f"query not forwarded: upstream {up}")
        if body != b"".join(EV):
            probs.append(f"bytes differ ({len(body)} vs {len(b''.join(EV))})")
        first = arr[0][0] if arr else None
        if t_head > 1.0 or (first is not None and first > 1.0):
            probs.append(
                f"not streamed: head after {t_head:.2f}s, first event after {first:.2f}s (events every 0.4s, total {arr[-1][0]:.2f}s), {len(arr)} chunk(s)"
            )
        await asyncio.sleep(0.3)
        inf = await in_flight(26017)
        if probs:
            return "DEFECT: GET /v1/responses/{id}?stream=true: " + "; ".join(probs)
        return f"OK: GET /v1/responses/{{id}}?stream=true relayed incrementally: head {t_head:.2f}s, {len(arr)} chunks, first at {first:.2f}s, upstream {up[-1]}"
    finally:
        px.stop()
        await fake.stop()


run(main)
