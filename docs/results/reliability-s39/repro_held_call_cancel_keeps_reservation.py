"""Release queue + `saga` admission: a new workflow admitted at once (there was room) is then held in the
release queue (the gate is full); its client gives up. The held call is withdrawn, but the workflow's KV
reservation is never let go: no call of it is in flight and no hold timer was ever armed, so it stays until
the session's idle TTL (an hour by default). A few such disconnects fill a replica's admission room and every
later new workflow waits. Prints DEFECT while present."""

import asyncio
import os

import aiohttp
import lib

SIM, PORT = 19471, 19470
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]
SLOW = ["--time-scale", "0.1"]  # the simulated replica 10x slower, so one call holds the gate a while


async def main():
    async with aiohttp.ClientSession() as s:
        busy = asyncio.create_task(lib.chat(s, B, "busy", sid="busy", max_tokens=400, timeout=60))
        await asyncio.sleep(0.5)
        for i in range(2):  # admitted at once, then held behind `busy` in the queue; the client leaves
            st, *_ = await lib.chat(s, B, lib.prompt(500, "xy"[i]), sid=f"gone{i}", timeout=0.5)
            print(f"gone{i}: {st}")
        print("while busy:", lib.summary(B), "queued:", lib.get(f"{B}/saga/v1/queue")[1]["queued"])
        print("busy:", (await busy)[0])
        await asyncio.sleep(12)  # > 2 x max_hold_s of wall time: every hold has run out
        after = lib.summary(B)
        print("12 s after the last call:", after)
        st, dt, *_ = await lib.chat(s, B, lib.prompt(1500, "n"), sid="next", timeout=15)
        print(f"a new 1500-word workflow on the idle replica: {st} after {dt:.1f}s")
        print("state:", lib.summary(B))
        return after, st


sims = lib.start_sims(SIM, 1, 200, extra=SLOW)
proxy = lib.start_proxy(
    PORT,
    R,
    config=os.path.join(os.path.dirname(os.path.abspath(__file__)), "saga_queue_hold.yaml"),
    extra=SLOW,
)
try:
    after, st = asyncio.run(main())
    held = sum(after["reserved"].values())
    print(
        f"DEFECT: {held} tokens stay reserved for workflows whose only call was withdrawn from the queue"
        if held > 0 or st != 200
        else "ok"
    )
finally:
    lib.stop(proxy)
    lib.stop(sims)
