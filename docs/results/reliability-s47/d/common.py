# ruff: noqa
import os, sys, asyncio, contextlib, json

TREE = os.environ.get("SAGA_TREE", "/tmp/snap47d")
sys.path.insert(0, TREE)
os.chdir(TREE)
from aiohttp import web
import aiohttp
from proxy.config import ProxyConfig
from proxy.server import running_proxy

OK_JSON = {
    "id": "c1",
    "object": "chat.completion",
    "model": "fake",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}


@contextlib.asynccontextmanager
async def replica(port, handler=None, vllm_cors=False):
    """A tiny vLLM-like replica; vllm_cors: answers ACAO * to any Origin (Starlette CORSMiddleware default)."""

    async def default(request):
        if request.path == "/health":
            return web.Response(text="")
        if request.path == "/v1/models":
            return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})
        if request.path == "/metrics":
            return web.Response(text="")
        body = await request.read()
        try:
            j = json.loads(body)
        except Exception:
            j = {}
        if j.get("stream"):
            r = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await r.prepare(request)
            await r.write(
                b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
            )
            await r.write(b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n')
            await r.write(b"data: [DONE]\n\n")
            return r
        return web.json_response(OK_JSON)

    h = handler or default

    @web.middleware
    async def cors(request, handler):
        resp = await handler(request)
        if vllm_cors and "Origin" in request.headers and not resp.prepared:
            resp.headers["Access-Control-Allow-Origin"] = "*"
        return resp

    async def wrapped(request):
        return await h(request)

    app = web.Application(middlewares=[cors])
    app.router.add_route("*", "/{tail:.*}", wrapped)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def cfg(replicas, port, **kw):
    kw.setdefault("health_interval_s", 0.1)
    return ProxyConfig(replicas=replicas, port=port, host="127.0.0.1", seed=1, **kw)


@contextlib.asynccontextmanager
async def proxy(replicas, port, **kw):
    async with running_proxy(cfg(replicas, port, **kw)) as url:
        await asyncio.sleep(0.3)
        yield url


async def metrics(http, url):
    async with http.get(url + "/metrics") as r:
        return await r.text()


def metric_lines(text, name):
    return [l for l in text.splitlines() if l.startswith(name)]
