# ruff: noqa
"""Fake vLLM replica sending exact bytes in chosen pieces, and a saga proxy in front of it."""

import os
from pathlib import Path

os.makedirs("/tmp/saga-review45a", exist_ok=True)

import asyncio, json, os, signal, socket, subprocess, sys, time
from aiohttp import web
import aiohttp

SNAP = os.environ.get("SAGA_TREE", str(Path(__file__).resolve().parents[4]))
SCEN = {}  # name -> list of byte pieces
RECEIVED = []


async def chat(request):
    body = await request.read()
    RECEIVED.append(body)
    d = json.loads(body)
    name = d["prompt"] if "prompt" in d else d["messages"][-1]["content"]
    pieces = SCEN[name]
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    tr = request.transport
    s = tr.get_extra_info("socket")
    if s is not None:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for p in pieces:
        await resp.write(p)
        await asyncio.sleep(0.015)
    await resp.write_eof()
    return resp


async def health(request):
    return web.Response(text="")


async def metrics(request):
    return web.Response(text="# none\n", content_type="text/plain")


async def models(request):
    return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})


def start_proxy(rport, pport, log):
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--replica",
            f"http://127.0.0.1:{rport}",
            "--port",
            str(pport),
            "--policy",
            "round-robin",
            "--no-access-log",
        ],
        cwd=SNAP,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return p


async def run(scenarios, rport, pport, ask_usage_for=()):
    """scenarios: dict name -> pieces. Returns dict name -> (client bytes, upstream body)."""
    SCEN.update(scenarios)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", chat)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", rport)
    await site.start()
    log = open(f"/tmp/saga-review45a/proxy_{pport}.log", "w")
    proc = start_proxy(rport, pport, log)
    out = {}
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            for _ in range(200):
                try:
                    async with s.get(f"http://127.0.0.1:{pport}/health") as r:
                        if r.status < 500:
                            break
                except Exception:
                    pass
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            for name in scenarios:
                req = {"model": "m", "stream": True, "messages": [{"role": "user", "content": name}]}
                path = "/v1/chat/completions"
                if name.startswith("cmpl"):
                    req = {"model": "m", "stream": True, "prompt": name}
                    path = "/v1/completions"
                if name in ask_usage_for:
                    req["stream_options"] = {"include_usage": True}
                RECEIVED.clear()
                async with s.post(f"http://127.0.0.1:{pport}{path}", json=req) as r:
                    got = b""
                    async for c in r.content.iter_any():
                        got += c
                    out[name] = (r.status, got, RECEIVED[-1] if RECEIVED else b"")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        await runner.cleanup()
    return out


def tok(i, text, crlf=False, spacing=False):
    ev = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}],
    }
    return ev


def enc(ev, spacing=False):
    if spacing:
        return json.dumps(ev).encode()
    return json.dumps(ev, separators=(",", ":")).encode()


def sse(payload, nl=b"\n"):
    return b"data: " + payload + nl + nl
