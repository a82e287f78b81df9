# ruff: noqa
"""A >256 KiB SSE event (flows through unheld) whose blank-line terminator is split across two reads, the
second read also carrying vLLM's usage event that the proxy added and strips: the stripping removes the
blank line ending the previous event, so the client gets two events fused into one."""

import sys, os, json, time, socket, subprocess, http.client

import acommon
from acommon import ROOT, behind_proxy

B, P = 42121, 42122


def fake():
    import asyncio
    from aiohttp import web

    async def health(r):
        return web.Response()

    async def models(r):
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def comp(r):
        body = await r.json()
        inc = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(r)
        big = {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "text": "x" * 300000,
                    "logprobs": None,
                    "finish_reason": "length",
                    "stop_reason": None,
                }
            ],
        }
        await resp.write(b"data: " + json.dumps(big, separators=(",", ":")).encode() + b"\n")
        await asyncio.sleep(0.3)
        rest = b"\n"
        if inc:
            rest += b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":5,"total_tokens":6,"completion_tokens":1}}\n\n'
        rest += b"data: [DONE]\n\n"
        await resp.write(rest)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", comp)
    web.run_app(app, host="127.0.0.1", port=B, print=None, access_log=None)


get = acommon.call


def events(raw):
    out = []
    for block in raw.decode().split("\n\n"):
        data = [l[5:].lstrip() for l in block.split("\n") if l.startswith("data:")]
        if data:
            out.append("\n".join(data))
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["fake"]:
        fake()
        sys.exit()
    with behind_proxy(__file__, B, P):
        body = json.dumps({"model": "m", "prompt": "hi", "stream": True, "max_tokens": 1}).encode()
        sd, direct = get(B, "POST", "/v1/completions", body)
        sp, proxied = get(P, "POST", "/v1/completions", body)
        de, pe = events(direct), events(proxied)

        def ok(evs):
            try:
                return all(e == "[DONE]" or json.loads(e) for e in evs)
            except ValueError:
                return False

        print("direct:", sd, len(direct), "bytes", len(de), "events, all parse:", ok(de))
        print(
            "proxy: ",
            sp,
            len(proxied),
            "bytes",
            len(pe),
            "events, all parse:",
            ok(pe),
            "tail:",
            proxied[-40:],
        )
        if ok(de) and not ok(pe):
            print(
                "DEFECT: proxy stripping its added usage event ate the blank line ending the previous (>256 KiB) event: "
                f"the client got {len(pe)} event(s), one not JSON, where vLLM sent {len(de)} valid ones"
            )
        elif proxied == direct:
            print("OK: the stream reached the client as vLLM sent it")
        else:
            print("OK?: streams differ but every event parses")
