# ruff: noqa
"""vLLM run with --enable-force-include-usage sends every stream its usage (should_include_usage returns
True, True whatever stream_options says). A client that did not ask gets that final usage event straight from
vLLM; through the proxy (which asked for usage itself and strips what it asked for) it is removed."""

import sys, os, json, time, socket, subprocess, http.client

ROOT = os.environ.get(
    "SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
)
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


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("no port")


def call(port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    d = r.read()
    c.close()
    return r.status, d


if __name__ == "__main__":
    if sys.argv[1:] == ["fake"]:
        fake()
        sys.exit()
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, __file__, "fake"], env=env, stderr=subprocess.DEVNULL)]
    try:
        wait_port(B)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "proxy.cli",
                    "serve",
                    "--replica",
                    f"http://127.0.0.1:{B}",
                    "--port",
                    str(P),
                    "--health-interval-s",
                    "0.5",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_port(P)
        for _ in range(100):
            if call(P, "GET", "/health")[0] == 200:
                break
            time.sleep(0.2)
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
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(5)
            except Exception:
                p.kill()
