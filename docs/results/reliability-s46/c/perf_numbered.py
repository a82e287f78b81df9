# ruff: noqa
"""Perf of the per-chunk `numbered` check (bytes.find of '"sequence_number":' in each chunk written on a Responses
stream) against the per-chunk cost of a whole relay through the proxy (fast server, in process)."""

import asyncio, json, os, sys, time, timeit
from common2 import *
import aiohttp
from proxy.sse_scan import SEQUENCE_NUMBER
from proxy.config import ProxyConfig
from proxy.server import running_proxy

ev = b'event: response.output_text.delta\ndata: {"content_index":0,"delta":" word","item_id":"msg_1","logprobs":[],"output_index":0,"sequence_number":123,"type":"response.output_text.delta"}\n\n'
N = 3000
per_find = min(timeit.repeat(lambda: ev.find(SEQUENCE_NUMBER) >= 0, number=200000, repeat=5)) / 200000
base = min(timeit.repeat(lambda: None, number=200000, repeat=5)) / 200000
per_find -= base
none = b"data: " + b"x" * 65536 + b"\n\n"
per_find_big = (
    min(timeit.repeat(lambda: none.find(SEQUENCE_NUMBER) >= 0, number=20000, repeat=5)) / 20000 - base
)
big = none


async def relay():
    async def h(m, p, hd, b):
        yield ("w", STREAM_HEAD)
        for i in range(N):
            yield ("w", chunk(ev))
            if i % 50 == 0:
                yield ("sleep", 0)
        yield ("w", b"0\r\n\r\n")

    rep = FakeReplica(29241, h)
    url = await rep.start()
    cfg = ProxyConfig(replicas=[url], port=29240, access_log=False, server="fast", health_interval_s=3600)
    try:
        async with running_proxy(cfg) as purl, aiohttp.ClientSession() as http:
            best = 1e9
            for _ in range(3):
                t = time.perf_counter()
                async with http.post(
                    purl + "/v1/responses", json={"model": "m", "input": "x", "stream": True}
                ) as r:
                    await r.read()
                best = min(best, time.perf_counter() - t)
    finally:
        await rep.stop()
    return best / N


per_chunk = asyncio.run(relay())
share = per_find / per_chunk
print(
    ("OK" if share < 0.05 else "DEFECT")
    + f": per-chunk find {per_find * 1e9:.0f} ns net of call overhead ({len(ev)} B chunk; {per_find_big * 1e6:.1f} us for a 64 KiB chunk holding no number, the worst case) vs "
    f"{per_chunk * 1e6:.1f} us per event relayed end to end (client+replica+proxy in one process): {share * 100:.2f}%"
)
