"""`queue.max_queued: 3` with `--workers 2`: each worker applies the bound to its own calls, so the proxy
holds up to 6 calls (max_queued x workers) before answering 429, and which calls get the 429 depends on
which worker owns their session (one process: 3 held, the rest 429). Prints DEFECT while present."""

import asyncio
import os

import aiohttp
import lib

PORT, SIM = 19630, 19631
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]
SESSIONS = ["f0", "f6", "f13", "f15", "f16", "f1", "f2", "f3", "f4", "f5"]  # five owned by each worker


async def main():
    async with aiohttp.ClientSession() as s:
        busy = asyncio.create_task(
            lib.chat(s, B, "hello", sid="busy", max_tokens=1000)
        )  # holds the gate ~4 s
        await asyncio.sleep(0.5)
        calls = [asyncio.create_task(lib.chat(s, B, f"hi {sid}", sid=sid, max_tokens=5)) for sid in SESSIONS]
        await asyncio.sleep(1)
        held = lib.get(f"{B}/saga/v1/queue")[1]["queued"]
        statuses = [(await t)[0] for t in calls]
        await busy
        return held, statuses


def once(workers):
    sims = lib.start_sims(SIM, 1, 20000)
    proxy = lib.start_proxy(
        PORT,
        R,
        config=os.path.join(os.path.dirname(os.path.abspath(__file__)), "saga_queue_bound3.yaml"),
        extra=["--workers", str(workers)],
    )
    try:
        held, statuses = asyncio.run(main())
        print(f"workers={workers}: held {held} (max_queued 3); statuses {statuses}; after {lib.summary(B)}")
        return held
    finally:
        lib.stop(proxy)
        lib.stop(sims)


if __name__ == "__main__":
    once(1)
    held = once(2)
    print(f"DEFECT: {held} calls held with max_queued 3" if held > 3 else "ok")
