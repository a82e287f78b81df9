# ruff: noqa
"""55d6301 says a whole answer cut short counts toward its replica's breaker "as a 5xx does", so that one
request every replica cuts does not take them all out. Only a retried cut is deferred: the last replica to cut
(no other left) counts at once (a 5xx there counts for nothing). Two replicas that cut one request, breaker_failures 1:
sent twice, both replicas are out of rotation (the same request answered 500 by both leaves both in)."""

from common import *

BODY = {"model": "fake", "messages": [{"role": "user", "content": "go"}]}


def make(kind):
    async def h(request):
        if request.path == "/health":
            return web.Response(text="")
        if request.path == "/v1/models":
            return web.json_response({"object": "list", "data": [{"id": "fake"}]})
        if request.path == "/metrics":
            return web.Response(text="")
        await request.read()
        if kind == "500":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        r = web.StreamResponse(headers={"Content-Type": "application/json"})
        r.content_length = 1000
        await r.prepare(request)
        await r.write(b'{"id":"c1"')
        await asyncio.sleep(0.05)
        request.transport.close()
        return r

    return h


async def run(server, kind):
    async with (
        replica(26171, make(kind)) as a,
        replica(26172, make(kind)) as b,
        proxy([a, b], 26170, server=server, breaker_failures=1) as url,
        aiohttp.ClientSession() as http,
    ):
        statuses = []
        for _ in range(2):
            async with http.post(url + "/v1/chat/completions", json=BODY) as r:
                await r.read()
                statuses.append(r.status)
            await asyncio.sleep(0.2)
        async with http.get(url + "/saga/v1/replicas") as r:
            br = [x["breaker"] for x in (await r.json())["replicas"]]
        return statuses, br


async def main():
    bad = []
    for server in ("fast", "aiohttp"):
        s5, b5 = await run(server, "500")
        sc, bc = await run(server, "cut")
        print(
            f"{server}: every replica 500 -> statuses {s5} breakers {b5}; every replica cuts -> statuses {sc} breakers {bc}"
        )
        if bc.count("open") > b5.count("open"):
            bad.append(
                f"{server}: a request every replica cuts opened {bc.count('open')} of 2 breakers (a 5xx: {b5.count('open')})"
            )
    for b in bad:
        print("DEFECT:", b)
    if not bad:
        print("OK: cuts count toward breakers as 5xx do")


asyncio.run(main())
