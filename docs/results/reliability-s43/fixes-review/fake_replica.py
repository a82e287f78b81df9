# ruff: noqa
"""A fake vLLM replica: records each request's body (GET /_bodies), answers chat/completions/responses/messages.
MODE env: 'plain' (default), 'usageword' (streamed first token is the word usage)."""

import json, sys, asyncio
from aiohttp import web

PORT = int(sys.argv[1])
MODE = sys.argv[2] if len(sys.argv) > 2 else "plain"
BODIES = []


async def models(r):
    return web.json_response({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "x"}]})


async def health(r):
    return web.Response(text="")


async def bodies(r):
    return web.json_response(BODIES)


async def metrics(r):
    return web.Response(text="")


def usage():
    return {
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


async def call(r):
    raw = await r.read()
    BODIES.append({"path": r.path, "body": raw.decode("utf-8", "replace"), "headers": dict(r.headers)})
    try:
        b = json.loads(raw)
    except Exception:
        return web.json_response(
            {"error": {"message": "bad json", "type": "BadRequestError", "code": 400}}, status=400
        )
    so = b.get("stream_options") or {}
    if b.get("stream"):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(r)
        words = ["usage", " is", " fine"] if MODE == "usageword" else ["hi", " there"]
        comp = r.path == "/v1/completions"
        if not comp:
            await resp.write(
                b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
            )
            await asyncio.sleep(0.05)
        for i, w in enumerate(words):
            last = i == len(words) - 1
            if comp:
                ch = {
                    "id": "c1",
                    "object": "text_completion",
                    "created": 1,
                    "model": "m",
                    "choices": [
                        {
                            "index": 0,
                            "text": w,
                            "logprobs": None,
                            "finish_reason": "stop" if last else None,
                            "stop_reason": None,
                        }
                    ],
                }
            else:
                ch = {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m",
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": w},
                            "logprobs": None,
                            "finish_reason": "stop" if last else None,
                        }
                    ],
                }
            await resp.write(b"data: " + json.dumps(ch, separators=(",", ":")).encode() + b"\n\n")
            await asyncio.sleep(0.05)
        if so.get("include_usage"):
            u = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [],
                "usage": usage(),
            }
            await resp.write(b"data: " + json.dumps(u, separators=(",", ":")).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
    return web.json_response(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
            "usage": usage(),
        }
    )


app = web.Application(client_max_size=64 << 20)
app.router.add_get("/v1/models", models)
app.router.add_get("/health", health)
app.router.add_get("/_bodies", bodies)
app.router.add_get("/metrics", metrics)
for p in (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
    "/inference/v1/generate",
):
    app.router.add_post(p, call)
web.run_app(app, host="127.0.0.1", port=PORT, print=None)
