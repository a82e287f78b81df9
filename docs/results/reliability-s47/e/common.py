# ruff: noqa
"""Shared helpers for the review scripts: tree from SAGA_TREE (default /tmp/snap47f)."""

import os, sys, asyncio, contextlib

TREE = os.environ.get("SAGA_TREE", "/tmp/snap47f")
sys.path.insert(0, TREE)
os.chdir(TREE)
import logging

logging.disable(logging.CRITICAL)
from aiohttp import web

SSE = b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
OK_JSON = b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
REPLICA_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Credentials": "true",
    "Access-Control-Expose-Headers": "X-Request-Id",
    "Vary": "Accept-Encoding",
}


def replica_app(chat):
    async def ok(request):
        return web.Response(text="")

    async def models(request):
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", ok)
    app.router.add_get("/metrics", ok)
    app.router.add_get("/v1/models", models)
    return app


async def cors_replica(request):
    body = await request.json()
    if body.get("stream"):
        r = web.StreamResponse(headers={"Content-Type": "text/event-stream", **REPLICA_CORS})
        await r.prepare(request)
        await r.write(SSE)
        return r
    return web.Response(body=OK_JSON, content_type="application/json", headers=REPLICA_CORS)


@contextlib.asynccontextmanager
async def serving(app, port):
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def proxy(replicas, port, **kw):
    from proxy.config import ProxyConfig
    from proxy.server import running_proxy

    cfg = ProxyConfig(replicas=replicas, port=port, seed=1, health_interval_s=0.1, **kw)
    async with running_proxy(cfg) as url:
        yield url


async def raw(port, data, timeout=3.0):
    """Sends raw bytes, reads until close or timeout; returns bytes."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    await w.drain()
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(r.read(65536), timeout)
            if not chunk:
                break
            out += chunk
    except asyncio.TimeoutError:
        pass
    w.close()
    return out


def head_fields(resp: bytes):
    head = resp.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return head[0], [tuple(x.split(": ", 1)) for x in head[1:] if ": " in x]
