# ruff: noqa
"""Responses stream cut mid-answer: the error event's sequence_number must be one past the last event the
CLIENT received (and present whenever the replica's events had numbers)."""

import asyncio, json, sys
from common import *
import aiohttp
from proxy.config import ProxyConfig
from proxy.server import running_proxy


def ev(n, typ="response.output_text.delta", **kw):
    d = {"type": typ, "sequence_number": n, "item_id": "msg_1", "delta": "x"}
    if n == 0:
        d = {
            "type": "response.created",
            "sequence_number": 0,
            "response": {"id": "resp_1", "status": "in_progress"},
        }
    d.update(kw)
    return b"event: %s\ndata: %s\n\n" % (d["type"].encode(), json.dumps(d).encode())


FIRST = ev(0) + ev(1) + ev(2)
CASES = {
    # name: (list of raw payload writes after FIRST, expected seq)
    "plain": ([], 3),
    "keepalive_comment_last": ([b": keep-alive\n\n"], 3),
    "blank_line_in_next_chunk": ([ev(3)[:-1], b"\n"], 4),
    "event_started_not_finished": ([ev(3)[:-1]], 3),  # event 3 never reaches the client
    "crlf": ([ev(3).replace(b"\n", b"\r\n")], 4),
    "no_numbers": (None, None),
}


def handler_for(extra):
    async def h(method, path, hdrs, body):
        yield ("w", STREAM_HEAD)
        if extra is None:
            p = b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_1"}}\n\n'
            yield ("w", chunk(p))
        else:
            yield ("w", chunk(FIRST))
            for x in extra:
                yield ("sleep", 0.05)
                yield ("w", chunk(x))
        yield ("sleep", 0.1)
        yield ("abort",)

    return h


async def one(server, name, extra, want):
    rep = FakeReplica(28111, handler_for(extra))
    url = await rep.start()
    cfg = ProxyConfig(replicas=[url], port=28110, access_log=False, server=server, stream_idle_timeout_s=2)
    try:
        async with running_proxy(cfg) as purl:
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{purl}/v1/responses", json={"model": "m", "input": "hi", "stream": True}
                ) as r:
                    text = await r.text()
    finally:
        await rep.stop()
    events = sse_events(text)
    got_nums = [
        d.get("sequence_number") for n, d in events if isinstance(d, dict) and d.get("type") != "error"
    ]
    last = events[-1][1] if events else None
    if not isinstance(last, dict) or last.get("type") != "error":
        return f"DEFECT: [{server}] {name}: stream did not end with an error event: {text[-200:]!r}"
    seq = last.get("sequence_number")
    if seq != want:
        return f"DEFECT: [{server}] {name}: error sequence_number={seq}, want {want} (client saw numbers {got_nums})"
    return f"OK: [{server}] {name}: sequence_number={seq}"


async def main():
    bad = 0
    for server in ("fast", "aiohttp"):
        for name, (extra, want) in CASES.items():
            line = await one(server, name, extra, want)
            bad += line.startswith("DEFECT")
            print(line, flush=True)


asyncio.run(main())
