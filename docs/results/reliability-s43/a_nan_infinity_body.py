# ruff: noqa
"""A chat body whose tool schema holds `Infinity` (what Python's json.dumps writes for float('inf'), e.g. a
pydantic-derived bound): vLLM reads bodies with Python's json.loads (Starlette's Request.json), which takes
NaN/Infinity, and serves it; the proxy refuses it with its own 400 before any replica sees it."""

import sys, os, json, time, socket, subprocess, http.client

import acommon
from acommon import ROOT, behind_proxy

B, P = 42191, 42192


def fake():
    from aiohttp import web

    async def health(r):
        return web.Response()

    async def models(r):
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def chat(r):
        body = json.loads(await r.read())  # as Starlette's Request.json() reads vLLM's bodies
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=B, print=None, access_log=None)


call = acommon.call


if __name__ == "__main__":
    if sys.argv[1:] == ["fake"]:
        fake()
        sys.exit()
    with behind_proxy(__file__, B, P):
        tool = {
            "type": "function",
            "function": {
                "name": "scale",
                "parameters": {
                    "type": "object",
                    "properties": {"factor": {"type": "number", "minimum": 0, "maximum": float("inf")}},
                },
            },
        }
        body = json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [tool]}
        ).encode()
        assert b"Infinity" in body
        d, p = call(B, "POST", "/v1/chat/completions", body), call(P, "POST", "/v1/chat/completions", body)
        print("direct", d[0], "| proxy", p[0], p[1][:160])
        if d[0] == 200 and p[0] == 400:
            print(
                "DEFECT: a body with a JSON Infinity/NaN literal (Python json.dumps' default), which vLLM's json.loads serves, is refused by the proxy with its own 400"
            )
        else:
            print("OK: the body is served through the proxy as directly")
