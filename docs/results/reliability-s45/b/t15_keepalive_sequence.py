# ruff: noqa
"""One keep-alive client connection (as SDK pools use) running, in order: a /v1/messages stream cut by the
replica, a proxy refusal (bad JSON), a chunked-upload /v1/responses, a completions stream, a GET of a response:
each answered in turn, none lost or mixed up."""

import os
from pathlib import Path

import asyncio, json, sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *
from midstream import MSG_EV, CMP_EV


def handler(m, p, h, b):
    r = basic_routes(m, p, h, b)
    if r:
        return r
    if p.startswith("/v1/messages"):
        return stream(MSG_EV, cut_after=2)
    if p == "/v1/responses":
        d = json.loads(b)
        return whole(
            200,
            json.dumps(
                {
                    "id": "resp_ka1",
                    "object": "response",
                    "status": "completed",
                    "output": [],
                    "echo": d.get("input"),
                    "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
                }
            ).encode(),
        )
    if p.startswith("/v1/responses/"):
        return whole(200, b'{"id":"resp_ka1","object":"response","status":"completed"}')
    return stream(CMP_EV + [b"data: [DONE]\n\n"])


async def read_answer(r):
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    hd = {
        l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip()
        for l in head.decode().split("\r\n")[1:]
        if ":" in l
    }
    st = int(head.split(b" ")[1])
    if "content-length" in hd:
        body = await asyncio.wait_for(r.readexactly(int(hd["content-length"])), 10)
    else:
        body = await asyncio.wait_for(read_chunked(r), 10)
    return st, hd, body


async def main():
    fake = Fake(26217, handler)
    await fake.start()
    px = Proxy(26015, ["http://127.0.0.1:26217"], ["--max-retries", "0"])
    try:
        await px.wait_ready()
        r, w = await asyncio.open_connection("127.0.0.1", 26015)
        probs = []
        got = []
        w.write(
            post(
                "/v1/messages",
                json.dumps(
                    {
                        "model": "fake",
                        "max_tokens": 5,
                        "stream": True,
                        "messages": [{"role": "user", "content": "x"}],
                    }
                ),
            )
        )
        st, h, b = await read_answer(r)
        got.append(st)
        if b"event: error" not in b:
            probs.append(f"1: no error event {b[-120:]!r}")
        w.write(post("/v1/messages", b'{"model":'))
        st, h, b = await read_answer(r)
        got.append(st)
        if st != 400:
            probs.append(f"2: {st} {b[:100]!r}")
        body = json.dumps({"model": "fake", "input": "chunky-input-marker"}).encode()
        w.write(
            b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % 10
            + body[:10]
            + b"\r\n"
            + b"%x\r\n" % (len(body) - 10)
            + body[10:]
            + b"\r\n0\r\n\r\n"
        )
        st, h, b = await read_answer(r)
        got.append(st)
        if st != 200 or b"chunky-input-marker" not in b:
            probs.append(f"3: {st} {b[:150]!r}")
        w.write(post("/v1/completions", json.dumps({"model": "fake", "prompt": "x", "stream": True})))
        st, h, b = await read_answer(r)
        got.append(st)
        if st != 200 or not b.endswith(b"data: [DONE]\n\n"):
            probs.append(f"4: {st} {b[-100:]!r}")
        w.write(b"GET /v1/responses/resp_ka1 HTTP/1.1\r\nHost: x\r\n\r\n")
        st, h, b = await read_answer(r)
        got.append(st)
        if st != 200 or b"resp_ka1" not in b:
            probs.append(f"5: {st} {b[:150]!r}")
        w.close()
        await asyncio.sleep(0.3)
        inf = await in_flight(26015)
        if inf[0] or any(inf[1]):
            probs.append(f"in_flight {inf}")
        if probs:
            return f"DEFECT: keep-alive sequence: statuses {got}; " + "; ".join(probs)
        return f"OK: one keep-alive connection: cut stream, refusal, chunked upload, stream, GET -> {got}, in_flight {inf}"
    except Exception as e:
        return f"DEFECT: keep-alive sequence broke after statuses {got}: {e!r}"
    finally:
        px.stop()
        await fake.stop()


run(main)
