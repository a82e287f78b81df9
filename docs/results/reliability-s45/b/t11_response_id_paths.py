# ruff: noqa
"""GET /v1/responses/{id} and POST .../{id}/cancel with ids holding encoded slashes, dots, query or control
characters: the proxy must not turn them into another upstream route (vLLM's operator routes are not relayed)."""

import os
from pathlib import Path

import asyncio, json, sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *


def handler(m, p, h, b):
    r = basic_routes(m, p, h, b)
    if r:
        return r
    return whole(
        404,
        b'{"error":{"message":"Response with id not found.","type":"NotFoundError","param":"response_id","code":404}}',
    )


IDS = [
    "..%2F..%2Freset_prefix_cache",
    "..%2F..%2F..%2Freset_prefix_cache%3Fx%3D",
    "%2E%2E/%2E%2E/reset_prefix_cache",
    "resp_a%0d%0aX-Injected:%201",
    "resp_a%00b",
    "resp_%3F%23x",
    "resp_ok",
]


async def main():
    fake = Fake(26211, handler)
    await fake.start()
    px = Proxy(26011, ["http://127.0.0.1:26211"])
    try:
        await px.wait_ready()
        probs = []
        seen = []
        for rid in IDS:
            for method, path in (("GET", f"/v1/responses/{rid}"), ("POST", f"/v1/responses/{rid}/cancel")):
                n = len(fake.requests)
                req = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
                try:
                    st, h, b = await raw(26011, req)
                except Exception as e:
                    st, b = repr(e), b""
                ups = [(mm, pp, hh.get("x-injected")) for mm, pp, hh, bb in fake.requests[n:]]
                seen.append(f"{method} {rid} -> {st} upstream {[u[1] for u in ups]}")
                for mm, pp, inj in ups:
                    norm = pp.split("?")[0]
                    if (
                        not norm.startswith("/v1/responses/")
                        or "/../" in "/" + norm.replace("%2F", "/").replace("%2f", "/")
                        and "reset" in pp
                        and not pp.startswith("/v1/responses/")
                    ):
                        probs.append(f"{method} {path} reached upstream {mm} {pp}")
                    if inj:
                        probs.append(f"header injected upstream via {path}")
                    if pp.startswith("/reset") or "/reset_prefix_cache" == norm:
                        probs.append(f"operator route reached: {mm} {pp}")
        inf = await in_flight(26011)
        if probs:
            return "DEFECT: response id paths: " + "; ".join(probs)
        return "OK: odd response ids stay under /v1/responses upstream: " + " | ".join(seen)
    finally:
        px.stop()
        await fake.stop()


run(main)
