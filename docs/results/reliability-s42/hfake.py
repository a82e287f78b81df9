# ruff: noqa: E501, UP031  (a reviewer's reproduction, kept as it ran)
"""Fake replica, behaviour from a JSON control file read each request: python hfake.py PORT CTLFILE
keys: metrics: ok|500|slow ; cap: true|false (publish cache_config_info) ; slow_s ; chat: ok|reset ; blocks"""

import asyncio
import json
import sys

from aiohttp import web

PORT, CTL = int(sys.argv[1]), sys.argv[2]


def mode():
    try:
        with open(CTL) as f:
            return json.load(f)
    except Exception:
        return {}


async def health(req):
    return web.Response(text="")


async def metrics(req):
    m = mode()
    mm = m.get("metrics", "ok")
    if mm == "500":
        return web.Response(status=500, text="x")
    if mm == "slow":
        await asyncio.sleep(m.get("slow_s", 3))
    t = 'vllm:num_requests_waiting{model_name="m"} 0\nvllm:num_requests_running{model_name="m"} 0\nvllm:kv_cache_usage_perc{model_name="m"} 0.0\n'
    if m.get("cap", True):
        t += 'vllm:cache_config_info{block_size="16",num_gpu_blocks="%d"} 1.0\n' % m.get("blocks", 1000)
    return web.Response(text=t)


async def models(req):
    return web.json_response({"object": "list", "data": [{"id": "saga-sim", "object": "model"}]})


async def chat(req):
    body = await req.json()
    m = mode()
    if m.get("chat") == "reset":
        req.transport.abort()
        await asyncio.sleep(1)
        return web.Response(status=500)
    await asyncio.sleep(m.get("chat_s", 0))
    return web.json_response(
        {
            "id": "c",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        },
        headers={"X-Fake": str(PORT)},
    )


app = web.Application()
app.router.add_get("/health", health)
app.router.add_get("/metrics", metrics)
app.router.add_get("/v1/models", models)
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, host="127.0.0.1", port=PORT, print=None, access_log=None)
