"""`--workers 2`, `saga` admission, one small replica: a batch tenant keeps starting one-call workflows
(`X-Session-End: true`) whose sessions belong to worker 0; an interactive tenant's one-call workflows
belong to worker 1. Whenever a flood workflow ends, worker 0 frees its reservation and, in the same
event, admits its own next waiting workflow into the room; worker 1 hears of the room only at the next
15 ms sync, when it is gone. The interactive workflow waits until the flood stops (one process: ~0.7 s).
Prints DEFECT while present."""

import asyncio
import sys
import time

import aiohttp
import lib

sys.path.insert(0, lib.ROOT)
from proxy.worker_set import owner_of

SIM, PORT = 19581, 19580
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]
FLOOD_S = 10.0


async def run():
    ids0 = iter([f"flood-{i}" for i in range(100000) if owner_of(f"flood-{i}", 2) == 0])
    ids1 = iter([f"light-{i}" for i in range(100000) if owner_of(f"light-{i}", 2) == 1])
    stop = time.time() + FLOOD_S
    light = []

    async def flood():
        async with aiohttp.ClientSession() as s:
            while time.time() < stop:
                sid = next(ids0)
                await lib.chat(
                    s,
                    B,
                    lib.prompt(600, "q" + sid),
                    sid=sid,
                    max_tokens=50,
                    timeout=30,
                    headers={"X-Tenant-ID": "batch", "X-Session-End": "true"},
                )

    async def interactive():
        async with aiohttp.ClientSession() as s:
            await asyncio.sleep(1.5)
            for _ in range(2):
                sid = next(ids1)
                st, dt, *_ = await lib.chat(
                    s,
                    B,
                    lib.prompt(600, "l" + sid),
                    sid=sid,
                    max_tokens=20,
                    timeout=30,
                    headers={"X-Tenant-ID": "inter", "X-Session-End": "true"},
                )
                light.append((st, round(dt, 2)))
                await asyncio.sleep(0.3)

    await asyncio.gather(*(flood() for _ in range(8)), interactive())
    await asyncio.sleep(1)
    return light, lib.summary(B)


def once(workers):
    sims = lib.start_sims(SIM, 1, 200)  # 3,200 tokens of KV: a few of these workflows at a time
    proxy = lib.start_proxy(PORT, R, extra=["--workers", str(workers)])
    try:
        light, after = asyncio.run(run())
        print(f"workers={workers}: the interactive workflows (status, s): {light}; after: {after}")
        return light
    finally:
        lib.stop(proxy)
        lib.stop(sims)


if __name__ == "__main__":
    once(1)
    light = once(2)
    worst = max(dt for _, dt in light)
    print(
        f"DEFECT: with 2 workers an interactive workflow waited {worst:.1f}s for admission behind the other "
        "worker's flood"
        if worst > 5.0
        else "ok"
    )
