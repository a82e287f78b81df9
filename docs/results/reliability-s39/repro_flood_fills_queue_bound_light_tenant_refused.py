"""Release queue with a bound (`max_queued: 5`, gate one call): a batch tenant floods (10 clients, retrying
50 ms after a 429); a light interactive tenant sends one call every 0.4 s. The bound is shared by every
tenant, so the flood keeps the queue full and the light tenant's calls are refused 429 `queue_full`,
nearly all of them, while the flood's are served: Agent Fair Share's protection of a light tenant ("its call
waits behind at most a bounded amount of the flood's work") never applies, as its calls never get in.
Prints DEFECT while present."""

import asyncio
import os
import time
from collections import Counter

import aiohttp
import lib

PORT, SIM = 19720, 19721
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]


async def main():
    stop = time.time() + 8
    light, flood_served = [], Counter()

    async def flood(i):
        async with aiohttp.ClientSession() as s:
            k = 0
            while time.time() < stop:
                st, *_ = await lib.chat(
                    s,
                    B,
                    f"f{i} {k} " + lib.prompt(30, "q"),
                    sid=f"fl{i}",
                    headers={"X-Tenant-ID": "batch"},
                    max_tokens=60,
                )
                flood_served[st] += 1
                k += 1
                if st == 429:
                    await asyncio.sleep(0.05)

    async def interactive():
        async with aiohttp.ClientSession() as s:
            await asyncio.sleep(1)
            for k in range(10):
                st, *_ = await lib.chat(
                    s, B, f"light {k}", sid="light", headers={"X-Tenant-ID": "inter"}, max_tokens=10
                )
                light.append(st)
                await asyncio.sleep(0.4)

    await asyncio.gather(*(flood(i) for i in range(10)), interactive())
    await asyncio.sleep(1)
    print("flood:", dict(flood_served), "light tenant:", dict(Counter(light)), "after:", lib.summary(B))
    return light


sims = lib.start_sims(SIM, 1, 20000)
proxy = lib.start_proxy(
    PORT, R, config=os.path.join(os.path.dirname(os.path.abspath(__file__)), "saga_queue_bound5.yaml")
)
try:
    light = asyncio.run(main())
    refused = light.count(429)
    print(
        f"DEFECT: {refused} of {len(light)} light-tenant calls refused 429 while the flood was served"
        if refused >= len(light) // 2
        else "ok"
    )
finally:
    lib.stop(proxy)
    lib.stop(sims)
