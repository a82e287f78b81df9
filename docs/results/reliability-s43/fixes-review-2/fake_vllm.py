# ruff: noqa
import json, sys, asyncio
from aiohttp import web

PORT = int(sys.argv[1])
FORCE = len(sys.argv) > 2 and sys.argv[2] == "force"
BODIES = []


async def models(r):
    return web.json_response({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "x"}]})


async def empty(r):
    return web.Response(text="")


async def bodies(r):
    return web.json_response(BODIES)


async def generate(r):
    raw = await r.read()
    BODIES.append({"path": r.path, "body": raw.decode("latin-1")})
    try:
        b = json.loads(raw)  # Starlette request.json(): json.loads on bytes (BOM / UTF-16 accepted)
    except Exception:
        return web.json_response({"error": "bad"}, status=400)
    return web.json_response({"ok": True, "cache_salt": b.get("cache_salt") if isinstance(b, dict) else None})


async def chat(r):
    raw = await r.read()
    BODIES.append({"path": r.path, "body": raw.decode()})
    b = json.loads(raw)
    so = b.get("stream_options")
    if so:
        inc = bool(so.get("include_usage")) or FORCE
        cont = inc and bool(so.get("continuous_usage_stats"))
    else:
        inc, cont = FORCE, False  # vLLM should_include_usage
    U = {"prompt_tokens": 5, "total_tokens": 7, "completion_tokens": 2}
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(r)
    for i, (d, fr) in enumerate(
        [({"role": "assistant", "content": ""}, None), ({"content": "hi"}, None), ({"content": " x"}, "stop")]
    ):
        o = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": fr}],
        }
        if cont:
            o["usage"] = U
        await resp.write(b"data: " + json.dumps(o, separators=(",", ":")).encode() + b"\n\n")
        await asyncio.sleep(0.02)
    if inc:
        await resp.write(
            b"data: "
            + json.dumps(
                {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m",
                    "choices": [],
                    "usage": U,
                },
                separators=(",", ":"),
            ).encode()
            + b"\n\n"
        )
    await resp.write(b"data: [DONE]\n\n")
    return resp


app = web.Application()
app.router.add_get("/v1/models", models)
app.router.add_get("/health", empty)
app.router.add_get("/metrics", empty)
app.router.add_get("/_bodies", bodies)
app.router.add_post("/inference/v1/generate", generate)
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, host="127.0.0.1", port=PORT, print=None)
