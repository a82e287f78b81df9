# ruff: noqa
"""The proxy's stop (drain time over) during a resumed Responses stream (GET /v1/responses/{id}?stream=true)
and during a POST one, fast server: the stream should end with a typed error event numbered one past the last."""

import asyncio, json
from common2 import *
import aiohttp
from proxy.config import ProxyConfig
from proxy.server import running_proxy


def delta(n):
    d = {"type": "response.output_text.delta", "item_id": "m", "delta": "x", "sequence_number": n}
    return b"event: response.output_text.delta\ndata: " + json.dumps(d).encode() + b"\n\n"


async def case(method, path):
    async def h(m, p, hd, b):
        yield ("w", STREAM_HEAD)
        yield ("w", chunk(delta(5) + delta(6)))
        yield ("sleep", 5)

    rep = FakeReplica(29231, h)
    rep.all_methods = True
    url = await rep.start()
    cfg = ProxyConfig(replicas=[url], port=29230, access_log=False, server="fast", health_interval_s=3600)
    got = {}

    async def client(purl):
        async with aiohttp.ClientSession() as http:
            kw = {"json": {"model": "m", "input": "hi", "stream": True}} if method == "POST" else {}
            async with http.request(method, purl + path, **kw) as r:
                try:
                    got["text"] = (await r.read()).decode()
                except Exception as e:
                    got["text"] = f"<{e!r}>"

    try:
        async with running_proxy(cfg, drain_s=0.3) as purl:
            t = asyncio.create_task(client(purl))
            await asyncio.sleep(0.6)
        await asyncio.wait_for(t, 8)
    finally:
        await rep.stop()
    evs = sse_events(got.get("text", ""))
    last = evs[-1][1] if evs else None
    ok = isinstance(last, dict) and last.get("type") == "error" and last.get("sequence_number") == 7
    print(
        ("OK" if ok else "DEFECT")
        + f": [fast] proxy stop during {method} {path}: last event {json.dumps(last)[:150] if last else got.get('text', '')[-150:]!r}",
        flush=True,
    )


async def main():
    await case("POST", "/v1/responses")
    await case("GET", "/v1/responses/resp_1?stream=true&starting_after=4")


asyncio.run(main())
