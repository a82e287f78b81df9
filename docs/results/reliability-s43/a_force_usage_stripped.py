# ruff: noqa
"""vLLM run with --enable-force-include-usage sends every stream its usage (should_include_usage returns
True, True whatever stream_options says). A client that did not ask gets that final usage event straight from
vLLM; through the proxy (which asked for usage itself and strips what it asked for) it is removed."""

import sys, os, json, time, socket, subprocess, http.client

import acommon
from acommon import ROOT, behind_proxy

B, P = 42195, 42196


def fake():
    from aiohttp import web

    async def health(r):
        return web.Response()

    async def models(r):
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def chat(r):
        await r.read()  # forced usage: stream_options is not looked at
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(r)
        for i, (text, fin) in enumerate([("Hi", None), ("", "stop")]):
            ev = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": fin}],
                "usage": {"prompt_tokens": 3, "total_tokens": 4 + i, "completion_tokens": 1 + i},
            }
            await resp.write(b"data: " + json.dumps(ev, separators=(",", ":")).encode() + b"\n\n")
        await resp.write(
            b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2}}\n\n'
        )
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

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
        body = json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        ).encode()
        d, p = call(B, "POST", "/v1/chat/completions", body), call(P, "POST", "/v1/chat/completions", body)
        fd, fp = d[1].count(b'"choices":[]'), p[1].count(b'"choices":[]')
        print("final usage events: direct", fd, "proxy", fp, "| same bytes:", d[1] == p[1])
        if fd == 1 and fp == 0:
            print(
                "DEFECT: with vLLM's --enable-force-include-usage the final usage event vLLM sends every stream is stripped by the proxy (the client keeps the per-chunk usage, loses the total)"
            )
        else:
            print("OK: the stream reached the client as vLLM sent it")
