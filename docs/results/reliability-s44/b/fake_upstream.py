"""A fake OpenAI endpoint on 127.0.0.1:PORT: each call takes DELAY s and answers 200, except that the first
call of every other task (by session id parity) is refused at once with 503 (a proxy shedding load)."""

# ruff: noqa
import os as _os, pathlib as _pl

HERE = str(_pl.Path(__file__).resolve().parent)
TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44b", exist_ok=True)
import asyncio, json, sys, zlib
from aiohttp import web

PORT, DELAY = int(sys.argv[1]), float(sys.argv[2])


async def chat(req):
    body = await req.json()
    sid = req.headers.get("X-Session-ID", "")
    if len(body["messages"]) == 2 and zlib.crc32(sid.encode()) % 2:
        return web.json_response({"error": {"message": "overloaded", "code": "queue_full"}}, status=503)
    await asyncio.sleep(DELAY)
    return web.json_response(
        {
            "choices": [{"message": {"content": "ok"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": body.get("max_tokens", 1)},
        }
    )


app = web.Application(client_max_size=1 << 28)
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, host="127.0.0.1", port=PORT, print=None)
