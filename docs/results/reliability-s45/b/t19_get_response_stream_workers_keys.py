# ruff: noqa
"""With --workers 2 and api_keys: GET /v1/responses/{id}?stream=true from several new connections (some land on the worker
that did not serve the response)&starting_after=N (vLLM's resumable stream of a background response): the
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
    open("/tmp/saga-review45-t19.yaml", "w").write("api_keys:\n  sk-alpha: alpha\n")
    fake = Fake(26221, handler)
    await fake.start()
    px = Proxy(
        26019,
        ["http://127.0.0.1:26221"],
        ["--workers", "2", "--config", str(Path(__file__).resolve().parent) + "/t19.yaml"],
    )
    try:
        await px.wait_ready()
        probs = []
        st, h, b = await raw(
            26019,
            post(
                "/v1/responses",
                json.dumps({"model": "fake", "input": "x", "background": True}),
                [("Authorization", "Bearer sk-alpha")],
            ),
        )
        results = []
        for k in range(6):
            r, w = await asyncio.open_connection("127.0.0.1", 26019)
            t0 = time.time()
            w.write(
                b"GET /v1/responses/resp_bg1?stream=true&starting_after=2 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer sk-alpha\r\n\r\n"
            )
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            t_head = time.time() - t0
            if b" 200 " not in head.split(b"\r\n")[0]:
                b2 = await r.read(400)
                results.append(f"conn{k}: {head.split(chr(13).encode())[0]!r} {b2[-160:]!r}")
                probs.append(f"conn{k}: {head.split(chr(13).encode())[0].decode()} after {t_head:.2f}s")
                w.close()
                continue
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
            first = arr[0][0]
            ctype = [l for l in hd.split("\r\n") if l.startswith("content-type")]
            results.append(
                f"conn{k}: head {t_head:.2f}s first {first:.2f}s chunks {len(arr)} {ctype} replica-hdr {'x-saga-replica' in hd}"
            )
            if body != b"".join(EV):
                probs.append(f"conn{k}: bytes differ")
            if t_head > 1.0 or first > 1.0:
                probs.append(
                    f"conn{k}: not streamed (head {t_head:.2f}s, first event {first:.2f}s, total {arr[-1][0]:.2f}s, {len(arr)} chunk(s), {ctype})"
                )
        await asyncio.sleep(0.3)
        inf = await in_flight(26019)
        if probs:
            return (
                "DEFECT: --workers 2 + api_keys, GET /v1/responses/{id}?stream=true: "
                + "; ".join(probs)
                + " | "
                + " | ".join(results)
            )
        return (
            "OK: --workers 2 + api_keys, GET /v1/responses/{id}?stream=true streamed on every connection: "
            + " | ".join(results)
        )
    finally:
        px.stop()
        await fake.stop()


run(main)
