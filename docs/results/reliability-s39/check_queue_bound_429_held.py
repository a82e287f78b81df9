import asyncio
import os
import time

import aiohttp
import lib

SIM, PORT = 19261, 19260
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]


async def main():
    async with aiohttp.ClientSession() as s:
        _st, *_ = await lib.chat(s, B, lib.prompt(1500, "a"), sid="fill")
        print(lib.summary(B))
        time.time()
        res = await asyncio.gather(
            *(lib.chat(s, B, lib.prompt(1500, "b"), sid=f"f{i}", timeout=40) for i in range(20))
        )
        from collections import Counter

        print(Counter(r[0] for r in res))
        print([(r[0], round(r[1], 1), r[3].get("Retry-After")) for r in res][:20])
        print([r[2][:150] for r in res if r[0] == 429][:1])
        await asyncio.sleep(6)
        print(lib.summary(B))


sims = lib.start_sims(SIM, 1, 200)
proxy = lib.start_proxy(
    PORT, R, config=os.path.join(os.path.dirname(os.path.abspath(__file__)), "saga_small_queue.yaml")
)
try:
    asyncio.run(main())
finally:
    lib.stop(proxy)
    lib.stop(sims)
