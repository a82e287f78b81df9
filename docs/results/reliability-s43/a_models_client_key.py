# ruff: noqa
"""vLLM started with --api-key, clients carrying that key, the proxy with no upstream_api_key/api_keys (its
calls pass the client's Authorization through): GET /v1/models, which vLLM answers 200 to such a client, is
a 503 through the proxy (it asks the replicas without the client's key)."""

import sys, os, json, time, socket, subprocess, http.client

import acommon
from acommon import ROOT, behind_proxy

B, P = 42151, 42152
KEY = "sk-vllm-key"


def fake():
    from aiohttp import web

    @web.middleware
    async def auth(request, handler):  # vLLM's --api-key: every /v1 route needs the key
        if request.path.startswith("/v1") and request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        return await handler(request)

    async def health(r):
        return web.Response()

    async def models(r):
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": "m",
                        "object": "model",
                        "created": 1,
                        "owned_by": "vllm",
                        "root": "m",
                        "parent": None,
                        "max_model_len": 4096,
                        "permission": [],
                    }
                ],
            }
        )

    async def chat(r):
        await r.read()
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    app = web.Application(middlewares=[auth])
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=B, print=None, access_log=None)


def call(port, method, path, body=None, key=True):
    return acommon.call(port, method, path, body, {"Authorization": f"Bearer {KEY}"} if key else None)


if __name__ == "__main__":
    if sys.argv[1:] == ["fake"]:
        fake()
        sys.exit()
    with behind_proxy(__file__, B, P):
        time.sleep(1)
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
        print(
            "chat   direct",
            call(B, "POST", "/v1/chat/completions", body)[0],
            "proxy",
            call(P, "POST", "/v1/chat/completions", body)[0],
        )
        d, p = call(B, "GET", "/v1/models"), call(P, "GET", "/v1/models")
        print("models direct", d[0], d[1][:80], "| proxy", p[0], p[1][:140])
        dn, pn = call(B, "GET", "/v1/models", key=False), call(P, "GET", "/v1/models", key=False)
        print("models without a key: direct", dn[0], "proxy", pn[0])
        if d[0] == 200 and p[0] != 200:
            print(
                f"DEFECT: GET /v1/models with the client's vLLM key: vLLM answers 200, the proxy {p[0]} (it drops the client's Authorization and has none of its own), while chat calls pass the same key through"
            )
        else:
            print("OK: /v1/models answered as vLLM does")
