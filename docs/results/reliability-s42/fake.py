"""Fake vLLM replica. Modes by env/args. Usage: python fake.py PORT MODE"""

import asyncio
import os
import sys
import time

from aiohttp import web

PORT = int(sys.argv[1])
MODE = sys.argv[2] if len(sys.argv) > 2 else "ok"
HOST = os.environ.get("FAKE_HOST")  # another loopback address (127.0.0.2, ...): the discovery scripts
STATE = {"t0": time.time()}
NORMAL_METRICS = (
    'vllm:num_requests_waiting{model_name="m"} 0\n'
    'vllm:num_requests_running{model_name="m"} 0\n'
    'vllm:kv_cache_usage_perc{model_name="m"} 0.0\n'
    'vllm:cache_config_info{block_size="16",num_gpu_blocks="1000"} 1.0\n'
)


def answer(model="saga-sim"):
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }


async def health(req):
    if MODE == "health_hang":
        await asyncio.sleep(3600)
    return web.Response(text="")


BIG = None
BIGM = None


async def metrics(req):
    global BIG
    if MODE == "metrics_big":
        if BIG is None:
            line = "vllm:cache_config_info{" + ",".join(f'a{i}="x"' for i in range(200)) + "} 1\n"
            BIG = (NORMAL_METRICS + line * ((16 * 1024 * 1024 - 200) // len(line))).encode()
        return web.Response(body=BIG, content_type="text/plain")
    if MODE == "metrics_slow":
        await asyncio.sleep(float(os.environ.get("FAKE_SLOW", "6")))
    if MODE == "metrics_trickle":  # an endless /metrics body, a line every 0.1 s
        r = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await r.prepare(req)
        await r.write(NORMAL_METRICS.encode())
        while True:
            await r.write(b"# filler\n")
            await asyncio.sleep(0.1)
    if MODE == "metrics_file":
        with open(os.environ["FAKE_METRICS_FILE"]) as page:  # noqa: ASYNC230 (a small local file)
            return web.Response(text=page.read(), content_type="text/plain")
    if MODE == "metrics_env":
        return web.Response(text=os.environ["FAKE_METRICS"].replace("\\n", "\n"), content_type="text/plain")
    if MODE == "metrics_500":
        return web.Response(status=500, text="boom")
    return web.Response(text=NORMAL_METRICS, content_type="text/plain")


async def models(req):
    if MODE == "models_big":
        global BIGM
        if BIGM is None:
            n = (16 * 1024 * 1024 - 1000) // 18
            BIGM = (
                b'{"object":"list","data":[{"id":"saga-sim"},'
                + b",".join(b'{"id":"m%07d"}' % i for i in range(n))
                + b"]}"
            )
        return web.Response(body=BIGM, content_type="application/json")
    if MODE == "models_hang":
        await asyncio.sleep(3600)
    return web.json_response(
        {"object": "list", "data": [{"id": os.environ.get("FAKE_MODEL", "saga-sim"), "object": "model"}]}
    )


async def chat(req):
    body = await req.json()
    if MODE == "slow_chat":
        await asyncio.sleep(float(os.environ.get("FAKE_SLOW", "2")))
    if body.get("stream"):
        r = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await r.prepare(req)
        await r.write(b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n')
        await r.write(b"data: [DONE]\n\n")
        await r.write_eof()
        return r
    # which replica answered: its address when several share the port (FAKE_HOST), else its port
    return web.json_response(answer(body.get("model", "saga-sim")), headers={"X-Fake": HOST or str(PORT)})


app = web.Application()
app.router.add_get("/health", health)
app.router.add_get("/metrics", metrics)
app.router.add_get("/v1/models", models)
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, host=HOST or "127.0.0.1", port=PORT, print=None, access_log=None)
