# ruff: noqa
"""CORS on: the proxy drops a replica's Access-Control-Expose-Headers and sends none of its own, so a browser
client cannot read the fields the proxy documents on its answers (X-Session-ID, X-Saga-Replica) nor the
Retry-After of its 429/503 (the OpenAI JS SDK reads retry-after): none is CORS-safelisted. DEFECT when an
allowed origin's answer does not expose them."""

import asyncio, sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from common import *
import aiohttp

BODY = {"model": "fake", "messages": [{"role": "user", "content": "go"}]}


async def main():
    bad = []
    async with serving(replica_app(cors_replica), 27601) as rep:
        for server, port in (("fast", 27602), ("aiohttp", 27603)):
            async with (
                proxy([rep], port, server=server, cors_allowed_origins="*") as url,
                aiohttp.ClientSession() as http,
            ):
                await asyncio.sleep(0.3)
                async with http.post(
                    url + "/v1/chat/completions", json=BODY, headers={"Origin": "https://app.example.com"}
                ) as r:
                    await r.read()
                    exposed = {
                        x.strip().lower()
                        for x in r.headers.get("Access-Control-Expose-Headers", "").split(",")
                        if x.strip()
                    }
                    has = {
                        h: h.lower() in exposed or "*" in exposed for h in ("X-Session-ID", "X-Saga-Replica")
                    }
                    print(
                        f"{server}: {r.status} X-Session-ID sent={'X-Session-ID' in r.headers} ACAO={r.headers.get('Access-Control-Allow-Origin')} Expose={r.headers.get('Access-Control-Expose-Headers')}"
                    )
                    if "X-Session-ID" in r.headers and not all(has.values()):
                        bad.append(server)
    if bad:
        print(
            f"DEFECT: an allowed origin's answer sends X-Session-ID/X-Saga-Replica but exposes neither ({', '.join(bad)}): a browser client cannot read them (nor Retry-After)"
        )
    else:
        print("OK: the proxy's answer fields are exposed to allowed origins")


asyncio.run(main())
