# ruff: noqa
"""--workers 2 + api_keys: streamed Responses continuations (previous_response_id) lasting ~3 s, sent on new
connections (some land on the worker that did not serve the response): each must stream event by event."""

import os
from pathlib import Path

import asyncio, json, sys, time, itertools

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *

ctr = itertools.count()


def handler(m, p, h, b):
    r = basic_routes(m, p, h, b)
    if r:
        return r
    rid = f"resp_w{next(ctr):05d}"
    R = b'{"id":"%s","object":"response","status":"in_progress","output":[],"usage":null}' % rid.encode()
    ev = [
        b'event: response.created\ndata: {"response":%s,"sequence_number":0,"type":"response.created"}\n\n'
        % R
    ]
    ev += [
        b'event: response.output_text.delta\ndata: {"delta":"w","item_id":"m","output_index":0,"content_index":0,"sequence_number":%d,"type":"response.output_text.delta"}\n\n'
        % i
        for i in range(1, 8)
    ]
    ev += [
        b'event: response.completed\ndata: {"response":{"id":"%s","object":"response","status":"completed","output":[],"usage":{"input_tokens":3,"output_tokens":7,"total_tokens":10}},"sequence_number":8,"type":"response.completed"}\n\n'
        % rid.encode()
    ]
    return stream(ev, delay=0.35)


async def main():
    open("/tmp/saga-review45-t20.yaml", "w").write("api_keys:\n  sk-alpha: alpha\n")
    fake = Fake(26222, handler)
    await fake.start()
    px = Proxy(
        26020,
        ["http://127.0.0.1:26222"],
        ["--workers", "2", "--config", str(Path(__file__).resolve().parent) + "/t20.yaml"],
    )
    try:
        await px.wait_ready()
        probs = []
        res = []
        prev = None
        for k in range(6):
            req = {"model": "fake", "input": f"t{k}", "stream": True}
            if prev:
                req["previous_response_id"] = prev
            r, w = await asyncio.open_connection("127.0.0.1", 26020)
            t0 = time.time()
            w.write(post("/v1/responses", json.dumps(req), [("Authorization", "Bearer sk-alpha")]))
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 15)
            th = time.time() - t0
            if b" 200 " not in head.split(b"\r\n")[0]:
                line0 = head.split(b"\r\n")[0]
                rest = await r.read(300)
                probs.append(f"turn{k}: {line0!r} {rest[-150:]!r}")
                w.close()
                break
            arr = []
            body = await asyncio.wait_for(
                read_chunked(r, on_chunk=lambda c: arr.append(time.time() - t0)), 15
            )
            w.close()
            prev = json.loads(body.split(b"\n\n")[-2].split(b"data: ", 1)[1])["response"]["id"]
            res.append(f"t{k}: head {th:.2f}s first {arr[0]:.2f}s chunks {len(arr)}")
            if arr[0] > 1.0 or len(arr) < 5:
                probs.append(f"turn{k} not streamed: first event at {arr[0]:.2f}s, {len(arr)} chunks")
        await asyncio.sleep(0.5)
        inf = await in_flight(26020)
        if inf[0] or any(inf[1]):
            probs.append(f"in_flight {inf}")
        if probs:
            return "DEFECT: --workers 2 streamed continuations: " + "; ".join(probs) + " | " + " | ".join(res)
        return (
            "OK: --workers 2 + api_keys streamed continuations stream event by event: "
            + " | ".join(res)
            + f"; in_flight {inf}"
        )
    finally:
        px.stop()
        await fake.stop()


run(main)
