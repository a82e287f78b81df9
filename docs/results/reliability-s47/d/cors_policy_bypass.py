# ruff: noqa
"""cors_allowed_origins is not the policy of what a browser reads from the call routes: the proxy forwards the
client's Origin, and relays the replica's own Access-Control-Allow-Origin (vLLM's default answers `*` to any
Origin), so an origin the proxy refuses (or '' = "no CORS at all") still reads the answers; and under the fast
server (the default) an answer relayed from a replica that sends no CORS header gets none from the proxy, so a
listed origin cannot read it (aiohttp adds it to whole answers)."""

from common import *

BODY = {"model": "fake", "messages": [{"role": "user", "content": "go"}]}
EVIL, APP = "https://evil.example.com", "https://app.example.com"


async def post(http, url, origin):
    async with http.post(url + "/v1/chat/completions", json=BODY, headers={"Origin": origin}) as r:
        await r.read()
        return r.status, r.headers.get("Access-Control-Allow-Origin")


async def main():
    bad = []
    for server in ("fast", "aiohttp"):
        for policy in (APP, ""):
            async with (
                replica(26151, vllm_cors=True) as rep,
                proxy([rep], 26150, server=server, cors_allowed_origins=policy) as url,
                aiohttp.ClientSession() as http,
            ):
                got = await post(http, url, EVIL)
                print(f"{server} cors_allowed_origins={policy!r}, vLLM-like replica, Origin evil -> {got}")
                if got[1] is not None:
                    bad.append(f"{server}/{policy!r}: a refused origin gets ACAO {got[1]!r} from the replica")
        async with (
            replica(26151, vllm_cors=False) as rep,
            proxy([rep], 26150, server=server, cors_allowed_origins=APP) as url,
            aiohttp.ClientSession() as http,
        ):
            got = await post(http, url, APP)
            print(f"{server} cors_allowed_origins={APP!r}, replica without CORS, Origin app -> {got}")
            if got[1] is None:
                bad.append(f"{server}: a listed origin's 200 has no ACAO")
    for b in bad:
        print("DEFECT:", b)
    if not bad:
        print("OK: the proxy's policy decides what every origin reads")


asyncio.run(main())
