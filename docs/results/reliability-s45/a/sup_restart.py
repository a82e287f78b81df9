# ruff: noqa
"""Restart of saga serve --workers 2 on the same port right after a stop: SIGTERM; SIGKILL of the whole group;
SIGKILL of the supervisor alone (restart at once, and with a streamed call in flight). The restart must serve."""

import os
from pathlib import Path

os.makedirs("/tmp/saga-review45a", exist_ok=True)

import asyncio, os, signal, socket, subprocess, sys, threading, time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sup_common import *
from aiohttp import web


async def slow(request):
    r = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await r.prepare(request)
    for i in range(600):
        await r.write(b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n')
        await asyncio.sleep(0.1)
    return r


async def ok(request):
    return web.Response(text="")


def replica():
    async def main():
        app = web.Application()
        app.router.add_post("/v1/chat/completions", slow)
        app.router.add_get("/health", ok)
        app.router.add_get("/metrics", ok)
        rn = web.AppRunner(app)
        await rn.setup()
        await web.TCPSite(rn, "127.0.0.1", 25998).start()
        await asyncio.Event().wait()

    asyncio.run(main())


threading.Thread(target=replica, daemon=True).start()


def call_in_flight(port):
    s = socket.create_connection(("127.0.0.1", port))
    body = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(body)
        + body
    )
    s.settimeout(5)
    s.recv(100)
    return s


results, bad = [], []
for i, how in enumerate(["SIGTERM", "SIGKILL-group", "SIGKILL-supervisor", "SIGKILL-supervisor+call"]):
    port = 25340 + i
    la, lb = f"/tmp/saga-review45a/rs{i}a.log", f"/tmp/saga-review45a/rs{i}b.log"
    a = start(["--workers", "2", "--port", str(port)], open(la, "w"))
    s1 = wait_listening(a, la)
    kids = children(a.pid)
    conn = call_in_flight(port) if how.endswith("call") else None
    if how == "SIGTERM":
        a.send_signal(signal.SIGTERM)
        a.wait(40)
    elif how == "SIGKILL-group":
        os.killpg(a.pid, signal.SIGKILL)
        a.wait()
    else:
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
    t = time.time()
    b = start(["--workers", "2", "--port", str(port)], open(lb, "w"))
    s2 = wait_listening(b, lb, 40)
    err = [l for l in open(lb).read().splitlines() if "error" in l][:1]
    res = f"{how}: first {s1}, restart {s2} {err}"
    (bad if s2 != "listening" else results).append(res)
    if conn:
        conn.close()
    reap(b, kids)
    killgroup(a)
    for k in kids:
        if alive(k):
            os.kill(k, signal.SIGKILL)
if bad:
    print(f"DEFECT: a restart right after a stop did not serve: {bad}; ok: {results}")
else:
    print(f"OK: restarts right after a stop served: {results}")
