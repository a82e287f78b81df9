# ruff: noqa
"""Responses API `background: true` (answered at once with status queued, polled with GET, cancelled with
/cancel) across 2 replicas whose stores are their own: GET, cancel and a continuation must reach the storing one."""

import os
from pathlib import Path

import asyncio, json, sys, itertools

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *


def make(tag):
    own = set()
    ctr = itertools.count()

    def handler(m, p, h, b):
        r = basic_routes(m, p, h, b)
        if r:
            return r
        nf = whole(
            404,
            b'{"error":{"message":"Response with id not found.","type":"NotFoundError","param":"response_id","code":404}}',
        )
        if m == "POST" and p == "/v1/responses":
            req = json.loads(b)
            prev = req.get("previous_response_id")
            if prev and prev not in own:
                return nf
            rid = f"resp_{tag}{next(ctr):04d}"
            own.add(rid)
            st = "queued" if req.get("background") else "completed"
            body = json.dumps(
                {
                    "id": rid,
                    "object": "response",
                    "created_at": 1,
                    "model": "fake",
                    "status": st,
                    "background": bool(req.get("background")),
                    "output": [],
                    "usage": None
                    if st == "queued"
                    else {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4},
                }
            ).encode()
            return whole(200, body)
        rid = p.split("/")[3]
        if rid not in own:
            return nf
        st = "cancelled" if p.endswith("/cancel") else "completed"
        return whole(
            200,
            json.dumps(
                {
                    "id": rid,
                    "object": "response",
                    "status": st,
                    "output": [],
                    "usage": {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8},
                }
            ).encode(),
        )

    return handler


async def main():
    fa = Fake(26212, make("a"))
    fb = Fake(26213, make("b"))
    await fa.start()
    await fb.start()
    px = Proxy(26012, ["http://127.0.0.1:26212", "http://127.0.0.1:26213"], ["--policy", "round-robin"])
    try:
        await px.wait_ready()
        probs = []
        res = []
        for i in range(6):
            st, h, b = await raw(
                26012,
                post(
                    "/v1/responses",
                    json.dumps({"model": "fake", "input": f"job {i}", "background": True, "store": True}),
                ),
            )
            if st != 200:
                probs.append(f"create {i}: {st} {b[:100]!r}")
                continue
            rid = json.loads(b)["id"]
            g = await raw(26012, f"GET /v1/responses/{rid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            c = await raw(
                26012,
                post(
                    "/v1/responses",
                    json.dumps({"model": "fake", "input": "more", "previous_response_id": rid}),
                ),
            )
            x = await raw(26012, post(f"/v1/responses/{rid}/cancel", b""))
            res.append(f"{rid}:get{g[0]}/cont{c[0]}/cancel{x[0]}")
            for name, a in (("GET", g), ("continue", c), ("cancel", x)):
                if a[0] != 200:
                    probs.append(f"{name} {rid}: {a[0]} {a[2][:90]!r}")
        await asyncio.sleep(0.3)
        inf = await in_flight(26012)
        if inf[0] or any(inf[1]):
            probs.append(f"in_flight {inf}")
        if probs:
            return "DEFECT: background responses: " + "; ".join(probs)
        return "OK: background responses under round-robin: " + " ".join(res) + f"; in_flight {inf}"
    finally:
        px.stop()
        await fa.stop()
        await fb.stop()


run(main)
