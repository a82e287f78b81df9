# ruff: noqa
"""Responses API and completions streams (vLLM's bytes, 0.15 s apart) through the proxy: byte-identical (less
the usage event the proxy itself asked for), one event per chunk, nothing merged or reordered; upstream body."""

import os
from pathlib import Path

import asyncio, json, time, sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *

R = b'{"id":"resp_x1","created_at":1,"model":"fake","object":"response","output":[],"status":"in_progress","usage":null}'
RESP = [
    b'event: response.created\ndata: {"response":%s,"sequence_number":0,"type":"response.created"}\n\n' % R,
    b'event: response.in_progress\ndata: {"response":%s,"sequence_number":1,"type":"response.in_progress"}\n\n'
    % R,
    b'event: response.output_item.added\ndata: {"item":{"id":"msg_1","content":[],"role":"assistant","status":"in_progress","type":"message"},"output_index":0,"sequence_number":2,"type":"response.output_item.added"}\n\n',
    b'event: response.output_text.delta\ndata: {"content_index":0,"delta":"Hi \\"usage\\": {","item_id":"msg_1","output_index":0,"sequence_number":3,"type":"response.output_text.delta","logprobs":[]}\n\n',
    b'event: response.output_text.delta\ndata: {"content_index":0,"delta":" there","item_id":"msg_1","output_index":0,"sequence_number":4,"type":"response.output_text.delta","logprobs":[]}\n\n',
    b'event: response.completed\ndata: {"response":{"id":"resp_x1","created_at":1,"model":"fake","object":"response","output":[{"id":"msg_1","content":[{"annotations":[],"text":"Hi there","type":"output_text","logprobs":null}],"role":"assistant","status":"completed","type":"message"}],"status":"completed","usage":{"input_tokens":11,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":13}},"sequence_number":5,"type":"response.completed"}\n\n',
]
C = lambda t, f: (
    b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"fake","choices":[{"index":%d,"text":"%s","logprobs":null,"finish_reason":%s,"stop_reason":null}],"usage":null}\n\n'
    % (t[0], t[1], f)
)
CMPL = [
    C((0, b"Hel"), b"null"),
    C((1, b"Wor"), b"null"),
    C((0, b"lo"), b'"length"'),
    C((1, b"ld"), b'"length"'),
    b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"fake","choices":[],"usage":{"prompt_tokens":4,"total_tokens":8,"completion_tokens":4}}\n\n',
    b"data: [DONE]\n\n",
]


def handler(m, p, h, b):
    r = basic_routes(m, p, h, b)
    if r:
        return r
    if p.startswith("/v1/responses"):
        return stream(RESP, delay=0.15)
    return stream(CMPL, delay=0.15)


async def one(port, path, req):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(post(path, json.dumps(req), [("X-Session-ID", "sb-" + path[-3:])]))
    await w.drain()
    await r.readuntil(b"\r\n\r\n")
    arr = []
    got = await asyncio.wait_for(read_chunked(r, on_chunk=lambda c: arr.append(c)), 15)
    w.close()
    return got, arr


async def main():
    fake = Fake(26210, handler)
    await fake.start()
    px = Proxy(26010, ["http://127.0.0.1:26210"])
    try:
        await px.wait_ready()
        probs = []
        info = []
        checks = [
            ("/v1/responses", {"model": "fake", "input": "hi", "stream": True}, b"".join(RESP)),
            (
                "/v1/completions",
                {
                    "model": "fake",
                    "prompt": ["a", "b"],
                    "max_tokens": 2,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
                b"".join(CMPL),
            ),
            (
                "/v1/completions",
                {"model": "fake", "prompt": ["a", "b"], "max_tokens": 2, "stream": True},
                b"".join(CMPL[:4] + CMPL[5:]),
            ),
        ]
        for path, req, want in checks:
            got, arr = await one(26010, path, req)
            up = json.loads(fake.requests[-1][3])
            extra = {k: up[k] for k in set(up) - set(req)}
            changed = {k: (req[k], up[k]) for k in req if up.get(k) != req[k]}
            info.append(f"{path} upstream +{extra} ~{changed}")
            per = [c.count(b"\n\n") for c in arr]
            if got != want:
                probs.append(
                    f"{path} {req.get('stream_options')}: bytes differ: got {len(got)} want {len(want)}; first diff at {next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), None)}: {got[-200:]!r}"
                )
            if per and max(per) > 1:
                probs.append(f"{path}: events merged {per}")
        await asyncio.sleep(0.3)
        inf = await in_flight(26010)
        if inf[0]:
            probs.append(f"in_flight {inf}")
        if probs:
            return "DEFECT: " + " | ".join(probs)
        return (
            "OK: responses + batched completions streams byte-identical, one event per chunk; "
            + "; ".join(info)
        )
    finally:
        px.stop()
        await fake.stop()


run(main)
