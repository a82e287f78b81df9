# ruff: noqa
"""Fake replica: n choices; choice 0 plain text ("stop"), choice i>0 a tool call t{i} ("tool_calls").
Streamed: choice n-1 .. 0 order for every piece (so a later choice names its tool first) and finishes in
order n-1 .. 0 (choice 0's finish last) unless FIN0FIRST=1."""

import sys, json, random, os
from aiohttp import web


async def health(r):
    return web.Response(text="")


async def models(r):
    return web.json_response({"object": "list", "data": [{"id": "saga-sim", "object": "model"}]})


async def metrics(r):
    return web.Response(text="")


def outs(n):
    nonce = random.randrange(10**9)
    return [
        ("text", f"Plain answer {nonce} done.")
        if i == 0
        else ("tool", (f"t{i}", json.dumps({"k": i, "nonce": nonce})))
        for i in range(n)
    ]


async def chat(r):
    b = await r.json()
    n = b.get("n") or 1
    n = int(float(n)) if not isinstance(n, bool) else 1
    o = outs(n)
    if not b.get("stream"):
        ch = []
        for i, (kind, v) in enumerate(o):
            if kind == "text":
                ch.append(
                    {"index": i, "message": {"role": "assistant", "content": v}, "finish_reason": "stop"}
                )
            else:
                ch.append(
                    {
                        "index": i,
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "id": f"call-{i}-{random.randrange(10**9)}",
                                    "type": "function",
                                    "function": {"name": v[0], "arguments": v[1]},
                                }
                            ],
                        },
                        "finish_reason": "tool_calls",
                    }
                )
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

    order = list(range(n - 1, -1, -1))
    for i in order:
        await ev([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    for i in order:
        kind, v = o[i]
        if kind == "text":
            await ev([{"index": i, "delta": {"content": v}, "finish_reason": None}])
        else:
            await ev(
                [
                    {
                        "index": i,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": f"call-{i}-{random.randrange(10**9)}",
                                    "type": "function",
                                    "function": {"name": v[0], "arguments": ""},
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ]
            )
            await ev(
                [
                    {
                        "index": i,
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": v[1]}}]},
                        "finish_reason": None,
                    }
                ]
            )
    fin = order[::-1] if os.environ.get("FIN0FIRST") else order
    for i in fin:
        await ev([{"index": i, "delta": {}, "finish_reason": "stop" if o[i][0] == "text" else "tool_calls"}])
    if (b.get("stream_options") or {}).get("include_usage"):
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
