# ruff: noqa: E501  (a reviewer's reproduction, kept as it ran)
"""Fake replica whose behaviour is read from a control file each request: python ctl_fake.py PORT CTLFILE"""

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


HITS = {"health": 0}


async def count(req):
    return web.json_response(HITS)


async def health(req):
    HITS["health"] += 1
    m = mode()
    if m.get("health") == "hang":
        await asyncio.sleep(3600)
    if m.get("health") == "500":
        return web.Response(status=500)
    return web.Response(text="")


async def metrics(req):
    m = mode()
    mm = m.get("metrics", "ok")
    if mm == "500":
        return web.Response(status=500, text="x")
    if mm == "hang":
        await asyncio.sleep(3600)
    if mm == "garbage":
        return web.Response(text="<html>garbage</html>")
    w = m.get("waiting", 0)
    return web.Response(
        text=f'vllm:num_requests_waiting{{model_name="m"}} {w}\nvllm:num_requests_running{{model_name="m"}} {m.get("running", 0)}\nvllm:kv_cache_usage_perc{{model_name="m"}} {m.get("kv", 0.0)}\nvllm:cache_config_info{{block_size="16",num_gpu_blocks="1000"}} 1.0\n'
    )


async def models(req):
    m = mode()
    if m.get("models") == "hang":
        await asyncio.sleep(3600)
    ids = m.get("model_ids", ["saga-sim"])
    return web.json_response({"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})


async def chat(req):
    body = await req.json()
    m = mode()
    if m.get("chat") == "500":
        return web.Response(status=500, text="boom")
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
app.router.add_get("/count", count)
app.router.add_get("/metrics", metrics)
app.router.add_get("/v1/models", models)
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, host="127.0.0.1", port=PORT, print=None, access_log=None)
