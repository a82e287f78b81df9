# ruff: noqa
"""Hostile sequence_number values from the replica, and the stopping event (proxy's own stop) on /v1/responses."""

import asyncio, json
from common import *
import aiohttp
from proxy.config import ProxyConfig
from proxy.server import running_proxy


def raw(n_text):
    return (
        b'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1"}}\n\n'
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":"m","delta":"x","sequence_number":'
        + n_text
        + b"}\n\n"
    )


CASES = {
    "1e999": (b"1e999", None),
    "negative": (b"-5", None),
    "19digits": (b"1234567890123456789", None),
    "float": (b"4.5", None),
    "exp_small": (b"1e2", None),
    "max18": (b"999999999999999999", 10**18),
}


async def run(server, name, body_bytes, want):
    async def h(m, p, hd, b):
        yield ("w", STREAM_HEAD)
        yield ("w", chunk(body_bytes))
        yield ("sleep", 0.1)
        yield ("abort",)

    rep = FakeReplica(28121, h)
    url = await rep.start()
    cfg = ProxyConfig(replicas=[url], port=28120, access_log=False, server=server)
    try:
        async with running_proxy(cfg) as purl, aiohttp.ClientSession() as http:
            async with http.post(
                f"{purl}/v1/responses", json={"model": "m", "input": "hi", "stream": True}
            ) as r:
                text = await r.text()
    finally:
        await rep.stop()
    last = sse_events(text)[-1][1]
    seq = last.get("sequence_number") if isinstance(last, dict) else "?"
    # any value is tolerable as long as the event parses and is an int >= 0 or absent; flag non-int/negative
    ok = seq is None or (isinstance(seq, int) and seq >= 0)
    print(
        ("OK" if ok else "DEFECT") + f": [{server}] hostile {name}: error event sequence_number={seq!r}",
        flush=True,
    )


async def stop_case(server):
    async def h(m, p, hd, b):
        yield ("w", STREAM_HEAD)
        yield ("w", chunk(raw(b"1")))
        yield ("sleep", 5)

    rep = FakeReplica(28121, h)
    url = await rep.start()
    cfg = ProxyConfig(replicas=[url], port=28120, access_log=False, server=server)
    got = {}

    async def client(purl):
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{purl}/v1/responses", json={"model": "m", "input": "hi", "stream": True}
            ) as r:
                try:
                    got["text"] = (await r.read()).decode()
                except Exception as e:
                    got["text"] = f"<{e!r}>"

    try:
        async with running_proxy(cfg, drain_s=0.3) as purl:
            t = asyncio.create_task(client(purl))
            await asyncio.sleep(0.5)
        await asyncio.wait_for(t, 5)
    finally:
        await rep.stop()
    evs = sse_events(got.get("text", ""))
    last = evs[-1][1] if evs else None
    if not isinstance(last, dict) or last.get("type") != "error":
        print(
            f"DEFECT: [{server}] proxy stop: responses stream did not end with a typed error event: {got.get('text', '')[-160:]!r}"
        )
    elif last.get("sequence_number") != 2:
        print(
            f"DEFECT: [{server}] proxy stop: responses error event sequence_number={last.get('sequence_number')!r}, want 2 (one past the last event, 1)"
        )
    else:
        print(f"OK: [{server}] proxy stop: sequence_number=2")


async def main():
    for server in ("fast", "aiohttp"):
        for name, (n, want) in CASES.items():
            await run(server, name, raw(n), want)
        await stop_case(server)


asyncio.run(main())
