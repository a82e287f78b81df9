"""A replica added through the admin API has no KV capacity known until its first health probe (capacity 0 =
"unknown" = room for everything), so every workflow waiting in admission is admitted onto it at once, far
past its KV (capacity x overcommit). Prints DEFECT while present."""

import asyncio

import aiohttp
import lib

SIM, PORT = 19221, 19220
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM + i}" for i in range(3)]
LETTERS = "abcdefghijklmnop"


async def main():
    async with aiohttp.ClientSession() as s:
        for i in range(2):  # fill the two configured replicas' admission room
            st, *_ = await lib.chat(s, B, lib.prompt(1500, LETTERS[i]), sid=f"fill{i}")
            assert st == 200, st
        waiters = [
            asyncio.create_task(lib.chat(s, B, lib.prompt(1500, LETTERS[2 + i]), sid=f"w{i}", timeout=40))
            for i in range(6)
        ]
        await asyncio.sleep(1.5)
        print("waiting before the add:", lib.summary(B)["waiting"])
        print("add", lib.post(f"{B}/saga/v1/replicas", {"url": R[2]}))
        await asyncio.sleep(0.3)
        # a new workflow's arrival (or the next 1 s housekeeping tick) runs admission
        late = asyncio.create_task(lib.chat(s, B, lib.prompt(1500, "z"), sid="late", timeout=40))
        await asyncio.sleep(0.5)
        st = lib.state(B)
        new = next(r for r in st["replicas"] if r["replica_id"] == R[2])
        print("new replica:", {k: new[k] for k in ("kv_capacity_tokens", "reserved_tokens", "in_flight")})
        print("waiting now:", st["admission"]["waiting"])
        await asyncio.sleep(3)
        new = next(r for r in lib.state(B)["replicas"] if r["replica_id"] == R[2])
        print("after its probe:", {k: new[k] for k in ("kv_capacity_tokens", "reserved_tokens", "in_flight")})
        limit = new["kv_capacity_tokens"] * 1.5
        res = await asyncio.gather(*waiters, late)
        print("waiters:", [(r[0], round(r[1], 1)) for r in res])
        return new["reserved_tokens"], limit


if __name__ == "__main__":
    sims = lib.start_sims(SIM, 3, 200)
    proxy = lib.start_proxy(PORT, R[:2])
    try:
        reserved, limit = asyncio.run(main())
        print(
            f"DEFECT: {reserved} tokens reserved on the added replica, its admission limit is {limit:.0f}"
            if reserved > limit + 2600
            else "ok"
        )
    finally:
        lib.stop(proxy)
        lib.stop(sims)
