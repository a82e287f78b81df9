# ruff: noqa
"""--workers 2, one keep-alive client connection carrying /v1/messages streams of many sessions (a pooled SDK
client): calls of the other worker's sessions are relayed; each ~3 s stream must still come event by event."""

import os
from pathlib import Path

import asyncio, json, sys, time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *
from midstream import MSG_EV

EV = (
    MSG_EV[:2]
    + [MSG_EV[2]] * 8
    + [
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":3,"output_tokens":8}}\n\n',
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ]
)


def handler(m, p, h, b):
    r = basic_routes(m, p, h, b)
    if r:
        return r
    return stream(EV, delay=0.25)


async def main():
    fake = Fake(26224, handler)
    await fake.start()
    px = Proxy(26022, ["http://127.0.0.1:26224"], ["--workers", "2"])
    try:
        await px.wait_ready()
        probs = []
        res = []
        r, w = await asyncio.open_connection("127.0.0.1", 26022)
        for k in range(6):
            t0 = time.time()
            w.write(
                post(
                    "/v1/messages",
                    json.dumps(
                        {
                            "model": "fake",
                            "max_tokens": 5,
                            "stream": True,
                            "messages": [{"role": "user", "content": f"x{k}"}],
                        }
                    ),
                    [("X-Session-ID", f"pool-{k}")],
                )
            )
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 15)
            th = time.time() - t0
            arr = []
            body = await asyncio.wait_for(
                read_chunked(r, on_chunk=lambda c: arr.append(time.time() - t0)), 15
            )
            res.append(f"s{k}: first {arr[0]:.2f}s chunks {len(arr)} end {arr[-1]:.2f}s")
            if body != b"".join(EV):
                probs.append(f"s{k} bytes differ")
            if arr[0] > 1.0 or len(arr) < 6:
                probs.append(f"s{k} not streamed: first event {arr[0]:.2f}s, {len(arr)} chunks")
        w.close()
        m = await metrics(26022)
        ho = [l for l in m.splitlines() if l.startswith("saga_handoffs_total")]
        await asyncio.sleep(0.5)
        inf = await in_flight(26022)
        if inf[0] or any(inf[1]):
            probs.append(f"in_flight {inf}")
        if probs:
            return (
                "DEFECT: --workers 2 relayed /v1/messages streams: "
                + "; ".join(probs)
                + " | "
                + " | ".join(res)
            )
        return (
            "OK: --workers 2 pooled connection, /v1/messages streams event by event: "
            + " | ".join(res)
            + f"; {ho}"
        )
    finally:
        px.stop()
        await fake.stop()


run(main)
