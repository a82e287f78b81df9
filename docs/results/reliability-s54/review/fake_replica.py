# ruff: noqa
"""A fake vLLM replica answering chat with n choices whose outputs differ: choice i (i % 3 == 2: text) else a
tool call t{i}({"k": i, "x": "..."}), whole or streamed (tool call deltas interleaved across choices)."""

import json, sys, asyncio, random
from aiohttp import web


async def health(r):
    return web.Response(text="")


async def models(r):
    return web.json_response(
        {"object": "list", "data": [{"id": "saga-sim", "object": "model", "max_model_len": 4096}]}
    )


async def metrics(r):
    return web.Response(text="")


def outs(n):
    res = []
    nonce = random.randrange(10**9)
    for i in range(n):
        if i % 3 == 2:
            res.append(("text", f"Plain answer number {i}: done with the step {nonce}."))
        else:
            res.append(("tool", (f"t{i}", json.dumps({"k": i, "x": "v" * (i + 1), "nonce": nonce}))))
    return res


async def chat(r):
    b = await r.json()
    n = b.get("n") or 1
    o = outs(n)
    if not b.get("stream"):
        ch = []
        for i, (kind, v) in enumerate(o):
            if kind == "text":
                m = {"role": "assistant", "content": v}
                fr = "stop"
            else:
                m = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": f"call-{i}", "type": "function", "function": {"name": v[0], "arguments": v[1]}}
                    ],
                }
                fr = "tool_calls"
            ch.append({"index": i, "message": m, "finish_reason": fr})
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "saga-sim",
                "choices": ch,
                "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n},
            }
        )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(r)

    async def ev(choices, usage=None):
        d = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "saga-sim",
            "choices": choices,
        }
        if usage:
            d["usage"] = usage
        await resp.write(b"data: " + json.dumps(d).encode() + b"\n\n")

    for i in range(n):
        await ev([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    # pieces per choice
    pieces = []
    for i, (kind, v) in enumerate(o):
        if kind == "text":
            words = v.split(" ")
            p = [{"content": w + (" " if j < len(words) - 1 else "")} for j, w in enumerate(words)]
        else:
            a = v[1]
            p = [
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": f"call-{i}",
                            "type": "function",
                            "function": {"name": v[0], "arguments": ""},
                        }
                    ]
                }
            ]
            p += [
                {"tool_calls": [{"index": 0, "function": {"arguments": a[k : k + 4]}}]}
                for k in range(0, len(a), 4)
            ]
        pieces.append(p)
    step = 0
    while any(step < len(p) for p in pieces):
        for i, p in enumerate(pieces):
            if step < len(p):
                await ev([{"index": i, "delta": p[step], "finish_reason": None}])
        step += 1
    for i, (kind, v) in enumerate(o):
        await ev([{"index": i, "delta": {}, "finish_reason": "stop" if kind == "text" else "tool_calls"}])
    so = b.get("stream_options") or {}
    if so.get("include_usage"):
        await ev([], {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n})
    await resp.write(b"data: [DONE]\n\n")
    return resp


app = web.Application()
app.add_routes(
    [
        web.get("/health", health),
        web.get("/v1/models", models),
        web.get("/metrics", metrics),
        web.post("/v1/chat/completions", chat),
    ]
)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
