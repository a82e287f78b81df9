"""`--workers 2` with the release queue: a tenant whose sessions belong to worker 0 floods one replica; a
light tenant's session belongs to worker 1. Each worker holds and releases its own calls; when one of the
flood's calls ends, worker 0 releases its next flood call at once (its own finish), and worker 1 learns of
the free slot only from the 15 ms load sync, by which time the slot is taken again. The light tenant's call
waits until the flood stops (its fair share is 50% of the gate; with one worker it waits ~0.4 s).
Prints DEFECT while present."""

import asyncio
import os
import time

import aiohttp
import lib

SIM, PORT = 19511, 19510
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]
FLOOD = ["f0", "f6", "f13", "f15", "f16", "f17"]  # sessions owned by worker 0 (proxy/worker_set.py owner_of)
LIGHT = "light3"  # owned by worker 1
FLOOD_S = 10.0


async def run():
    stop = time.time() + FLOOD_S
    light = []

    async def flood(sid):
        async with aiohttp.ClientSession() as s:
            k = 0
            while time.time() < stop:
                await lib.chat(
                    s,
                    B,
                    f"flood {sid} {k} " + lib.prompt(50, "q"),
                    sid=sid,
                    headers={"X-Tenant-ID": "batch"},
                    max_tokens=60,
                    timeout=30,
                )
                k += 1

    async def interactive():
        async with aiohttp.ClientSession() as s:
            await asyncio.sleep(1.5)
            for k in range(3):
                st, dt, *_ = await lib.chat(
                    s,
                    B,
                    f"light {k} hello",
                    sid=LIGHT,
                    headers={"X-Tenant-ID": "inter"},
                    max_tokens=20,
                    timeout=30,
                )
                light.append((st, round(dt, 2)))
                await asyncio.sleep(0.3)

    await asyncio.gather(*(flood(x) for x in FLOOD), interactive())
    await asyncio.sleep(1)
    return light, lib.summary(B)


def once(workers):
    sims = lib.start_sims(SIM, 1, 20000)
    proxy = lib.start_proxy(
        PORT,
        R,
        config=os.path.join(os.path.dirname(os.path.abspath(__file__)), "saga_queue_gate2.yaml"),
        extra=["--workers", str(workers)],
    )
    try:
        light, after = asyncio.run(run())
        print(f"workers={workers}: the light tenant's calls (status, seconds): {light}; after: {after}")
        return light
    finally:
        lib.stop(proxy)
        lib.stop(sims)


if __name__ == "__main__":
    once(1)
    light = once(2)
    worst = max(dt for _, dt in light)
    print(
        f"DEFECT: with 2 workers the light tenant's call waited {worst:.1f}s behind the other worker's flood"
        if worst > 4.0
        else "ok"
    )
