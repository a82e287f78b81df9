# ruff: noqa
"""A chat body whose tool schema holds `Infinity` (what Python's json.dumps writes for float('inf'), e.g. a
pydantic-derived bound): vLLM reads bodies with Python's json.loads (Starlette's Request.json), which takes
NaN/Infinity, and serves it; the proxy refuses it with its own 400 before any replica sees it."""

import sys, os, json, time, socket, subprocess, http.client

ROOT = os.environ.get(
    "SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
)
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
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(5)
            except Exception:
                p.kill()
