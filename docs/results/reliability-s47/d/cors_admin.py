# ruff: noqa
"""Default config (cors_allowed_origins `*`, no admin_token, as shipped): any web page may preflight and call
the admin API (/saga/v1/*) and read its answers: replica URLs, sessions, state; add a replica of its own with
a JSON POST. vLLM has no admin API; the CORS of vLLM's API should not extend to the proxy's control plane."""

from common import *

EVIL = "https://evil.example.com"


async def main():
    bad = []
    for server in ("fast", "aiohttp"):
        async with (
            replica(26161) as rep,
            proxy([rep], 26160, server=server) as url,
            aiohttp.ClientSession() as http,
        ):
            pre = {
                "Origin": EVIL,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            }
            async with http.options(url + "/saga/v1/replicas", headers=pre) as r:
                p = (r.status, r.headers.get("Access-Control-Allow-Origin"))
            async with http.get(url + "/saga/v1/replicas", headers={"Origin": EVIL}) as r:
                g = (r.status, r.headers.get("Access-Control-Allow-Origin"), (await r.text())[:60])
            async with http.post(
                url + "/saga/v1/replicas", json={"url": "http://127.0.0.1:26169"}, headers={"Origin": EVIL}
            ) as r:
                a = (r.status, r.headers.get("Access-Control-Allow-Origin"))
            print(server, "preflight", p, "GET", g, "POST add", a)
            if p == (200, "*") and g[1] == "*":
                bad.append(
                    f"{server}: an evil origin's page reads and drives the admin API (preflight {p}, GET {g[:2]}, POST {a})"
                )
    for b in bad:
        print("DEFECT:", b)
    if not bad:
        print("OK: the admin API is not open to other origins")


asyncio.run(main())
