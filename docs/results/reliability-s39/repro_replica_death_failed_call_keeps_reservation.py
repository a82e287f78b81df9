"""`saga` admission, one replica: a new workflow's first call is admitted and running when the replica dies;
the call fails over, finds no other replica and is refused (503 "every healthy replica failed this
request"). Its workflow's KV reservation is never let go (no call in flight, no hold timer armed: the
failover path withdraws the call but does not lapse the reservation as a finished-without-usage call
does). When the replica comes back, the dead call's footprint is still reserved there (holds here are at
most 1 s), until the session's idle TTL (an hour by default): a new workflow waits on an idle replica.
Prints DEFECT while present."""

import asyncio
import os

import aiohttp
import lib

PORT, SIM = 19610, 19611
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]


async def main(box):
    async with aiohttp.ClientSession() as s:
        victim = asyncio.create_task(
            lib.chat(s, B, lib.prompt(1200, "v") + " hello", sid="victim", max_tokens=1000)
        )
        await asyncio.sleep(0.8)
        print("running:", lib.summary(B))
        lib.stop(box[0])  # the replica dies mid-call
        st, dt, text, _ = await victim
        print(f"the call: {st} {text[:110]}")
        box[0] = lib.start_sims(SIM, 1, 200)  # it comes back, empty
        await asyncio.sleep(5)
        after = lib.summary(B)
        print("5 s after it came back:", after)
        st, dt, *_ = await lib.chat(s, B, lib.prompt(1500, "n"), sid="next", timeout=10)
        print(f"a new workflow on the idle replica: {st} after {dt:.1f}s")
        return sum(after["reserved"].values()), st


box = [lib.start_sims(SIM, 1, 200)]
proxy = lib.start_proxy(
    PORT, R, config=os.path.join(os.path.dirname(os.path.abspath(__file__)), "saga_short_hold.yaml")
)
try:
    held, st = asyncio.run(main(box))
    print(
        f"DEFECT: {held} tokens stay reserved for a workflow whose only call failed with its replica"
        if held > 0 or st != 200
        else "ok"
    )
finally:
    lib.stop(proxy)
    lib.stop(box[0])
