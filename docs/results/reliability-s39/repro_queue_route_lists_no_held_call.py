"""Release queue on: `GET /saga/v1/queue` counts the held calls (`queued`) but its `calls` list holds only the
calls in flight, so no held call (which tenant, session, replica, how long) can be seen anywhere in the admin
API. Prints DEFECT while present."""

import asyncio
import os

import aiohttp
import lib

PORT, SIM = 19640, 19641
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]


async def main():
    async with aiohttp.ClientSession() as s:
        busy = asyncio.create_task(lib.chat(s, B, "hello", sid="busy", max_tokens=1000))
        await asyncio.sleep(0.5)
        held = [
            asyncio.create_task(lib.chat(s, B, f"hi {i}", sid=f"held{i}", headers={"X-Tenant-ID": f"t{i}"}))
            for i in range(3)
        ]
        await asyncio.sleep(0.7)
        q = lib.get(f"{B}/saga/v1/queue")[1]
        print(q)
        await asyncio.gather(busy, *held)
        listed = {c["session_id"] for c in q["calls"]}
        return q["queued"], listed


sims = lib.start_sims(SIM, 1, 20000)
proxy = lib.start_proxy(
    PORT, R, config=os.path.join(os.path.dirname(os.path.abspath(__file__)), "saga_queue_gate1.yaml")
)
try:
    queued, listed = asyncio.run(main())
    print(
        f"DEFECT: {queued} calls held, none listed (listed: {sorted(listed)})"
        if queued and not listed & {"held0", "held1", "held2"}
        else "ok"
    )
finally:
    lib.stop(proxy)
    lib.stop(sims)
