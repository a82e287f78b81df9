# ruff: noqa
"""(Run with cors_allowed_origins "*", the default when this was reviewed; off by default since.) The fast server's refusals made while reading the request (413 body over max_body_bytes, 415 compressed
body, ...) are queued with no headers (`_refuse`: `_Request(..., [], ...)`), so `_answer_error` finds no Origin
and adds no Access-Control-Allow-Origin: a browser page cannot read why its request was refused (the aiohttp
server's 413 carries it; docs/config.md: the proxy's own refusals carry it)."""

from common import *

ORIGIN = "https://app.example.com"


async def main():
    bad = []
    for server in ("fast", "aiohttp"):
        async with (
            replica(26191) as rep,
            proxy([rep], 26190, server=server, max_body_bytes=2000, cors_allowed_origins="*") as url,
            aiohttp.ClientSession() as http,
        ):
            async with http.post(
                url + "/v1/chat/completions", data=b"x" * 5000, headers={"Origin": ORIGIN}
            ) as r:
                await r.read()
                big = (r.status, r.headers.get("Access-Control-Allow-Origin"))
            async with http.post(
                url + "/v1/chat/completions",
                data=b"xx",
                headers={"Origin": ORIGIN, "Content-Encoding": "gzip"},
            ) as r:
                await r.read()
                gz = (r.status, r.headers.get("Access-Control-Allow-Origin"))
            async with http.post(url + "/v1/chat/completions", data=b"{bad", headers={"Origin": ORIGIN}) as r:
                await r.read()
                bad_json = (r.status, r.headers.get("Access-Control-Allow-Origin"))
        print(f"{server}: 413 {big} | Content-Encoding gzip {gz} | bad JSON {bad_json}")
        for name, got in (("413", big), ("content-encoding", gz)):
            if got[0] >= 400 and got[1] is None:
                bad.append(
                    f"{server}: the {got[0]} refusal ({name}) to an allowed Origin has no Access-Control-Allow-Origin"
                )
    for b in bad:
        print("DEFECT:", b)
    if not bad:
        print("OK: every refusal names the allowed origin")


asyncio.run(main())
