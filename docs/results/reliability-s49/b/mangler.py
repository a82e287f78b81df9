# ruff: noqa
"""A front for a simulated replica that relays every route but rewrites /metrics per MODE.
usage: python3 mangler.py LISTEN_PORT BACKEND_PORT MODE
MODE: pass | 500 | garbage | hang | sub:REGEX=>REPL[;;REGEX=>REPL...] (re.sub on the page) | file:PATH (mode read from PATH each time)
"""

import asyncio, re, sys
import aiohttp
from aiohttp import web

LISTEN, BACK, MODE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


def mode():
    if MODE.startswith("file:"):
        try:
            return open(MODE[5:]).read().strip()
        except OSError:
            return "pass"
    return MODE


async def handle(req: web.Request):
    m = mode()
    url = f"http://127.0.0.1:{BACK}{req.rel_url}"
    if req.path == "/metrics" and m != "pass":
        if m == "500":
            return web.Response(status=500, text="boom")
        if m == "garbage":
            return web.Response(text="\x00\xff not prometheus {{{ \n" * 50, content_type="text/plain")
        if m == "hang":
            await asyncio.sleep(3600)
    body = await req.read()
    async with app["s"].request(
        req.method,
        url,
        data=body,
        headers={k: v for k, v in req.headers.items() if k.lower() not in ("host", "content-length")},
    ) as r:
        if req.path == "/metrics" and m.startswith("sub:"):
            t = (await r.read()).decode()
            for rule in m[4:].split(";;"):
                a, b = rule.split("=>", 1)
                t = re.sub(a, b, t)
            return web.Response(status=r.status, text=t, content_type="text/plain")
        resp = web.StreamResponse(
            status=r.status,
            headers={
                k: v
                for k, v in r.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
            },
        )
        await resp.prepare(req)
        async for chunk in r.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def on_start(app):
    app["s"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))


app = web.Application()
app.on_startup.append(on_start)
app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=LISTEN, print=None, access_log=None)
