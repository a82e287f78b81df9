# ruff: noqa
"""A pass-through in front of a sim replica that puts each sentence of an answer on its own line
(real summaries are multi-line; the sim's are one line). Chat completions, JSON and SSE."""

import sys, json, asyncio
from aiohttp import web, ClientSession

UP = sys.argv[2]
PORT = int(sys.argv[1])


def fix(t):
    return t.replace(". ", ".\n")


async def handle(req):
    body = await req.read()
    hdrs = {
        k: v
        for k, v in req.headers.items()
        if k.lower() not in ("host", "content-length", "transfer-encoding")
    }
    async with req.app["s"].request(req.method, UP + req.path_qs, data=body or None, headers=hdrs) as r:
        ct = r.headers.get("Content-Type", "")
        out_h = {
            k: v
            for k, v in r.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")
        }
        if "event-stream" in ct:
            resp = web.StreamResponse(status=r.status, headers=out_h)
            await resp.prepare(req)
            prev_dot = False
            buf = b""
            async for chunk in r.content.iter_any():
                buf += chunk
                while b"\n\n" in buf:
                    ev, buf = buf.split(b"\n\n", 1)
                    lines = []
                    for line in ev.split(b"\n"):
                        if line.startswith(b"data: ") and line[6:].strip() != b"[DONE]":
                            try:
                                d = json.loads(line[6:])
                                for ch in d.get("choices", []):
                                    c = (ch.get("delta") or {}).get("content")
                                    if c:
                                        if prev_dot and c.startswith(" "):
                                            c = "\n" + c[1:]
                                        c = fix(c)
                                        prev_dot = c.endswith(".")
                                        ch["delta"]["content"] = c
                                line = b"data: " + json.dumps(d).encode()
                            except Exception:
                                pass
                        lines.append(line)
                    await resp.write(b"\n".join(lines) + b"\n\n")
            if buf:
                await resp.write(buf)
            await resp.write_eof()
            return resp
        data = await r.read()
        if "json" in ct and req.path.endswith("/chat/completions"):
            try:
                d = json.loads(data)
                for ch in d.get("choices", []):
                    m = ch.get("message") or {}
                    if m.get("content"):
                        m["content"] = fix(m["content"])
                data = json.dumps(d).encode()
            except Exception:
                pass
        return web.Response(status=r.status, body=data, headers=out_h)


async def main():
    app = web.Application(client_max_size=64 << 20)
    app["s"] = ClientSession()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    await asyncio.Event().wait()


asyncio.run(main())
