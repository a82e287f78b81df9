# ruff: noqa
"""CORS on (`*`): the admin API is kept from web pages (no Access-Control-Allow-Origin), but /metrics (replica
URLs, tenant names, per-tenant figures) gets `Access-Control-Allow-Origin: *`, so any page in an operator's
browser reads it with a plain GET. DEFECT when /metrics answers a page's origin."""

import asyncio, sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from common import *
import aiohttp


async def main():
    found = []
    async with serving(replica_app(cors_replica), 27501) as rep:
        for server, port in (("fast", 27502), ("aiohttp", 27503)):
            async with (
                proxy(
                    [rep], port, server=server, cors_allowed_origins="*", api_keys={"sk-1": "team-secret"}
                ) as url,
                aiohttp.ClientSession() as http,
            ):
                await asyncio.sleep(0.3)
                for path in ("/metrics", "/saga/v1/replicas"):
                    async with http.get(url + path, headers={"Origin": "https://evil.example"}) as r:
                        text = await r.text()
                        acao = r.headers.get("Access-Control-Allow-Origin")
                        print(f"{server} GET {path}: {r.status} ACAO={acao} names replica={rep in text}")
                        if path == "/metrics" and acao is not None and r.status == 200:
                            found.append(server)
    if found:
        print(
            f"DEFECT: /metrics readable by any web page with CORS on ({', '.join(found)}), the admin API's facts (replica URLs) included"
        )
    else:
        print("OK: /metrics carries no Access-Control-Allow-Origin")


asyncio.run(main())
