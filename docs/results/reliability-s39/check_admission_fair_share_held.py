import asyncio
import os
import time

import aiohttp
import lib

SIM, PORT = 19271, 19270
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]


async def main():
    async with aiohttp.ClientSession() as s:
        t0 = time.time()

        async def one(t, i, delay):
            await asyncio.sleep(delay)
            r = await lib.chat(
                s,
                B,
                lib.prompt(500, "ab"[t == "B"] + str(i)),
                sid=f"{t}{i}",
                headers={"X-Tenant-ID": t, "X-Session-End": "true"},
                max_tokens=100,
                timeout=120,
            )
            return t, i, r[0], round(time.time() - t0, 1)

        tasks = [one("A", i, 0) for i in range(40)] + [one("B", i, 1.0) for i in range(5)]
        res = await asyncio.gather(*tasks)
        for r in sorted(res, key=lambda x: x[3]):
            print(r)
        print(lib.summary(B))


sims = lib.start_sims(SIM, 1, 200)
proxy = lib.start_proxy(
    PORT, R, config=os.path.join(os.path.dirname(os.path.abspath(__file__)), "saga_q1000.yaml")
)
try:
    asyncio.run(main())
finally:
    lib.stop(proxy)
    lib.stop(sims)
