# ruff: noqa
"""vLLM routes a client calls that the proxy does not know: answered with the proxy's own 404 (never reaching
a replica), and nothing in the README's endpoint table or docs says these routes are not served."""

import sys, os, json, time, socket, subprocess, http.client

import acommon
from acommon import ROOT, behind_proxy

B, P = 42181, 42182
# (method, path, body): routes the vLLM 0.32 API server registers (vllm/entrypoints/**/api_router.py)
ROUTES = [
    ("GET", "/version", None),
    ("GET", "/ping", None),
    ("POST", "/ping", None),
    ("POST", "/v1/chat/completions/batch", {"model": "m", "messages": [[{"role": "user", "content": "hi"}]]}),
    ("POST", "/inference/v1/generate", {"model": "m", "token_ids": [1, 2]}),
    ("POST", "/v1/chat/completions/derender", {"model": "m"}),
    ("GET", "/tokenizer_info", None),
    ("POST", "/invocations", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/generative_scoring", {"model": "m"}),
    ("POST", "/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "/x"}),
]


def fake():
    from aiohttp import web

    async def health(r):
        return web.Response()

    async def models(r):
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def any_route(r):
        await r.read()
        return web.json_response({"served_by_replica": r.path})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_route("*", "/{tail:.*}", any_route)
    web.run_app(app, host="127.0.0.1", port=B, print=None, access_log=None)


def call(port, method, path, body=None):
    return acommon.call(port, method, path, None if body is None else json.dumps(body))


if __name__ == "__main__":
    if sys.argv[1:] == ["fake"]:
        fake()
        sys.exit()
    with behind_proxy(__file__, B, P):
        refused = []
        for m, path, body in ROUTES:
            d, p = call(B, m, path, body), call(P, m, path, body)
            print(f"{m:4} {path:34} replica {d[0]}  proxy {p[0]} {p[1][:70]}")
            if d[0] == 200 and p[0] == 404:
                refused.append(f"{m} {path}")
        readme = open(os.path.join(ROOT, "README.md")).read()
        documented = any(w in readme for w in ("/version", "other routes", "not forwarded", "unknown route"))
        if refused and not documented:
            print(
                f"DEFECT: {len(refused)} vLLM routes ({', '.join(refused[:4])}, ...) get the proxy's own 404 and never reach a replica; the README's endpoint table does not say other routes are not served"
            )
        else:
            print("OK: vLLM's routes reach a replica (or the docs say they are not served)")
