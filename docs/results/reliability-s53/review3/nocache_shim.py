# ruff: noqa
# a pass-through in front of one replica that drops cached-token reporting (vLLM without
# --enable-prompt-tokens-details): usage.prompt_tokens_details removed. argv: listen_port upstream_port
import asyncio, json, sys
from aiohttp import web, ClientSession

PORT, UP = int(sys.argv[1]), int(sys.argv[2])


def fix(d):
    u = d.get("usage") if isinstance(d, dict) else None
    if isinstance(u, dict):
        u.pop("prompt_tokens_details", None)
        u.pop("cache_read_input_tokens", None)
    return d


async def handle(req):
    body = await req.read()
    hdr = {
        k: v
        for k, v in req.headers.items()
        if k.lower() not in ("host", "content-length", "transfer-encoding")
    }
    async with req.app["s"].request(
        req.method, f"http://127.0.0.1:{UP}{req.rel_url}", data=body, headers=hdr
    ) as r:
        data = await r.read()
        ct = r.headers.get("Content-Type", "")
        if "json" in ct:
            try:
                data = json.dumps(fix(json.loads(data))).encode()
            except Exception:
                pass
        elif "event-stream" in ct:
            out = []
            for line in data.decode().split("\n"):
                if line.startswith("data: ") and line[6:].strip() not in ("[DONE]",):
                    try:
                        line = "data: " + json.dumps(fix(json.loads(line[6:])))
                    except Exception:
                        pass
                out.append(line)
            data = "\n".join(out).encode()
        return web.Response(status=r.status, body=data, headers={"Content-Type": ct})


async def main():
    app = web.Application(client_max_size=64 << 20)
    app["s"] = ClientSession()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    await asyncio.Event().wait()


asyncio.run(main())
