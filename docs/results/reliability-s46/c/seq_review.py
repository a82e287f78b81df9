# ruff: noqa
"""Item 1 and the extra checks: Responses stream error numbering under odd replica numbering, nested
sequence_number keys, the resumed GET stream, a chat stream fed Responses-shaped events, an oversize event."""

import asyncio, json, sys
from common2 import *
import aiohttp
from proxy.config import ProxyConfig
from proxy.server import running_proxy


def ev(obj):
    return b"event: %s\ndata: %s\n\n" % (
        obj["type"].encode(),
        json.dumps(obj, separators=(",", ":")).encode(),
    )


def delta(n):
    return ev(
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "x",
            "sequence_number": n,
        }
    )


CREATED = {
    "type": "response.created",
    "sequence_number": 0,
    "response": {"id": "resp_1", "status": "in_progress"},
}
SCHEMA_TOOL = {
    "type": "function",
    "name": "f",
    "parameters": {"type": "object", "properties": {"sequence_number": {"type": "integer"}}},
}
CASES = {
    # name: (payload chunks, expected sequence_number of the error event)
    "start_at_100": ([ev({**CREATED, "sequence_number": 100}), delta(101), delta(102)], 103),
    "decreasing_5_9_3": ([ev({**CREATED, "sequence_number": 5}), delta(9), delta(3)], 4),
    "vllm_order_nested_tool_schema": (
        [
            ev(
                {
                    "response": {"id": "resp_1", "tools": [SCHEMA_TOOL]},
                    "sequence_number": 0,
                    "type": "response.created",
                }
            )
        ],
        1,
    ),
    "openai_order_nested_tool_schema": (
        [
            ev(
                {
                    "type": "response.created",
                    "sequence_number": 0,
                    "response": {"id": "resp_1", "tools": [SCHEMA_TOOL]},
                }
            )
        ],
        1,
    ),
    "openai_order_nested_numeric": (
        [
            ev(
                {
                    "type": "response.created",
                    "sequence_number": 0,
                    "response": {
                        "id": "resp_1",
                        "text": {
                            "format": {
                                "type": "json_schema",
                                "schema": {"examples": [{"sequence_number": 41}]},
                            }
                        },
                    },
                }
            )
        ],
        1,
    ),
    "numbers_in_one_chunk_then_unnumbered_event": (
        [ev(CREATED) + delta(1) + b'event: ping\ndata: {"type":"ping"}\n\n'],
        2,
    ),
    "space_before_colon": (
        [
            b'event: response.created\ndata: {"type":"response.created","sequence_number" : 7,"response":{"id":"resp_1"}}\n\n'
        ],
        8,
    ),
}


def handler_for(chunks):
    async def h(method, path, hdrs, body):
        yield ("w", STREAM_HEAD)
        for c in chunks:
            yield ("w", chunk(c))
            yield ("sleep", 0.05)
        yield ("sleep", 0.1)
        yield ("abort",)

    return h


async def run_one(server, name, chunks, want, port, method="POST", path="/v1/responses", body=None):
    rep = FakeReplica(port + 1, handler_for(chunks))
    rep.all_methods = True
    url = await rep.start()
    cfg = ProxyConfig(
        replicas=[url],
        port=port,
        access_log=False,
        server=server,
        stream_idle_timeout_s=2,
        health_interval_s=3600,
    )
    try:
        async with running_proxy(cfg) as purl, aiohttp.ClientSession() as http:
            kw = (
                {"json": body if body is not None else {"model": "m", "input": "hi", "stream": True}}
                if method == "POST"
                else {}
            )
            async with http.request(method, f"{purl}{path}", **kw) as r:
                text = (await r.read()).decode("utf-8", "replace")
    finally:
        await rep.stop()
    return text


async def main():
    port = 29210
    for server in ("fast", "aiohttp"):
        for name, (chunks, want) in CASES.items():
            text = await run_one(server, name, chunks, want, port)
            evs = sse_events(text)
            last = evs[-1][1] if evs else None
            seq = (
                last.get("sequence_number")
                if isinstance(last, dict) and last.get("type") == "error"
                else "no error event"
            )
            print(
                ("OK" if seq == want else "DEFECT")
                + f": [{server}] {name}: error sequence_number={seq!r}, want {want}",
                flush=True,
            )
        # resumed stream: GET /v1/responses/{id}?stream=true&starting_after=4
        text = await run_one(
            server,
            "resumed",
            [delta(5), delta(6)],
            7,
            port,
            "GET",
            "/v1/responses/resp_1?stream=true&starting_after=4",
        )
        evs = sse_events(text)
        last = evs[-1][1] if evs else None
        seq = (
            last.get("sequence_number")
            if isinstance(last, dict) and last.get("type") == "error"
            else f"no error event: {text[-150:]!r}"
        )
        print(
            ("OK" if seq == 7 else "DEFECT")
            + f": [{server}] resumed GET stream cut: error sequence_number={seq!r}, want 7",
            flush=True,
        )
        # a chat stream whose replica answers Responses-shaped events: a chat-shaped error event
        text = await run_one(
            server,
            "chat",
            [ev(CREATED), delta(1)],
            None,
            port,
            path="/v1/chat/completions",
            body={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        )
        evs = sse_events(text)
        last = evs[-1][1] if evs else None
        ok = isinstance(last, dict) and "error" in last and last.get("type") != "error"
        print(
            ("OK" if ok else "DEFECT")
            + f": [{server}] chat stream fed Responses events, cut: last event {json.dumps(last)[:120]}",
            flush=True,
        )
        # an event over MAX_HELD_EVENT (256 KiB), OpenAI field order, cut mid-event
        big = ev(
            {"type": "response.output_text.done", "sequence_number": 1, "item_id": "m", "text": "y" * 300000}
        )
        text = await run_one(server, "oversize", [ev(CREATED), big[:290000]], 1, port)
        evs = sse_events(text)
        last = evs[-1][1] if evs else None
        typed = isinstance(last, dict) and last.get("type") == "error"
        print(
            ("OK" if typed else "DEFECT")
            + f": [{server}] half-sent oversize event then cut: client's last parsed event "
            f"{'error seq=%r' % last.get('sequence_number') if typed else repr(str(last)[-100:])}",
            flush=True,
        )


asyncio.run(main())
