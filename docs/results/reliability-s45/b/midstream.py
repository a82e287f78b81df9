# ruff: noqa
"""Replica dies mid-stream on ROUTE: expect an error event in the route's format, connection closed, in_flight 0."""

import os
from pathlib import Path

import asyncio, json, time, sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *

MSG_EV = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"fake","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":37,"output_tokens":0}}}\n\n',
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}\n\n',
]
RESP_EV = [
    b'event: response.created\ndata: {"response":{"id":"resp_abc","created_at":1,"model":"fake","object":"response","output":[],"status":"in_progress","usage":null},"sequence_number":0,"type":"response.created"}\n\n',
    b'event: response.in_progress\ndata: {"response":{"id":"resp_abc","created_at":1,"model":"fake","object":"response","output":[],"status":"in_progress","usage":null},"sequence_number":1,"type":"response.in_progress"}\n\n',
    b'event: response.output_text.delta\ndata: {"content_index":0,"delta":"Hel","item_id":"msg_1","output_index":0,"sequence_number":2,"type":"response.output_text.delta","logprobs":[]}\n\n',
    b'event: response.output_text.delta\ndata: {"content_index":0,"delta":"lo","item_id":"msg_1","output_index":0,"sequence_number":3,"type":"response.output_text.delta","logprobs":[]}\n\n',
]
CMP_EV = [
    b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"fake","choices":[{"index":0,"text":"Hel","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n',
    b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"fake","choices":[{"index":0,"text":"lo","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n',
    b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"fake","choices":[{"index":0,"text":"x","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n',
]
ROUTES = {
    "/v1/messages": (
        MSG_EV,
        {
            "model": "fake",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "hello"}],
        },
    ),
    "/v1/responses": (RESP_EV, {"model": "fake", "stream": True, "input": "hello"}),
    "/v1/completions": (CMP_EV, {"model": "fake", "stream": True, "prompt": "hello", "max_tokens": 20}),
}


def check(route, port, fport):
    events, req = ROUTES[route]

    def handler(m, p, h, b):
        r = basic_routes(m, p, h, b)
        if r:
            return r
        return stream(events, delay=0.05, cut_after=3 if len(events) > 3 else 2)

    async def main():
        fake = Fake(fport, handler)
        await fake.start()
        px = Proxy(port, [f"http://127.0.0.1:{fport}"], ["--max-retries", "0"])
        try:
            await px.wait_ready()
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(post(route, json.dumps(req), [("X-Session-ID", "mid-1")]))
            await w.drain()
            t0 = time.time()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            status = head.split(b" ")[1]
            body = b""
            closed = False
            err = None
            try:
                body = await asyncio.wait_for(read_chunked(r), 10)
                closed = True  # stream ended by its terminating chunk
                try:
                    await asyncio.wait_for(r.read(), 1.0)
                    conn = "closed"
                except asyncio.TimeoutError:
                    conn = "kept alive"
                el = time.time() - t0
            except asyncio.TimeoutError:
                err = "timeout (hang)"
            except Exception as e:
                err = repr(e)
            el = locals().get("el", time.time() - t0)
            w.close()
            await asyncio.sleep(0.5)
            inf = await in_flight(port)
            tail = body.split(b"\n\n")[-2] if body.count(b"\n\n") else body
            problems = []
            if err:
                problems.append(f"stream read error {err}")
            if route == "/v1/messages":
                ok_tail = (
                    tail.startswith(b"event: error\ndata: ")
                    and json.loads(tail.split(b"data: ", 1)[1]).get("type") == "error"
                )
            else:
                try:
                    d = json.loads(tail.split(b"data: ", 1)[1])
                    ok_tail = "error" in d or d.get("type") in ("error", "response.failed")
                except Exception:
                    ok_tail = False
            if not ok_tail:
                problems.append(f"last event not an error event: {tail[-300:]!r}")
            if not closed:
                problems.append("connection not closed")
            if inf[0] != 0 or any(inf[1]):
                problems.append(f"in_flight {inf}")
            prefix = b"".join(events[: 3 if len(events) > 3 else 2])
            if not body.startswith(prefix):
                problems.append("relayed part differs from what replica sent")
            if problems:
                return (
                    f"DEFECT: {route} replica cut mid-stream: "
                    + "; ".join(problems)
                    + f" (status {status!r}, {el:.1f}s)"
                )
            return f"OK: {route} replica cut mid-stream -> status {status.decode()}, relayed prefix intact, final event {tail[:160]!r}, stream terminated in {el:.1f}s (connection {conn}), in_flight {inf}"
        finally:
            px.stop()
            await fake.stop()

    run(main)
