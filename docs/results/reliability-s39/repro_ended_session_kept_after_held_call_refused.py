"""Release queue: a session is ended (`POST /saga/v1/sessions/{id}/end`) while its call is held in the queue;
the call's replica is then drained (or removed), so the held call is routed again, finds no replica and is
refused with a 503. The end was deferred until no call of the session waits or runs, but that refusal never
completes it: the ended session stays listed (and kept) until the idle TTL, an hour by default.
Prints DEFECT while present."""

import asyncio
import os

import aiohttp
import lib

SIM, PORT = 19541, 19540
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]


async def main(mode):
    async with aiohttp.ClientSession() as s:
        st, *_ = await lib.chat(s, B, "first call of s", sid="s")
        assert st == 200, st
        busy = asyncio.create_task(lib.chat(s, B, "hello", sid="busy", max_tokens=1000, timeout=30))  # ~4 s
        await asyncio.sleep(0.5)
        held = asyncio.create_task(lib.chat(s, B, "second call of s", sid="s", timeout=30))
        await asyncio.sleep(0.5)
        print("held in the queue:", lib.get(f"{B}/saga/v1/queue")[1]["queued"])
        print("end s:", lib.post(f"{B}/saga/v1/sessions/s/end"))
        print(f"{mode}:", lib.post(f"{B}/saga/v1/replicas/{mode}", {"url": R[0]})[0])
        st, dt, text, _ = await held
        print(f"the held call: {st} after {dt:.1f}s {text[:90]}")
        await busy
        await asyncio.sleep(3)
        sessions = [x["session_id"] for x in lib.get(f"{B}/saga/v1/sessions")[1]["sessions"]]
        print("sessions 3 s later:", sessions, lib.summary(B))
        return "s" in sessions


def run(mode):
    sims = lib.start_sims(SIM, 1, 200)
    proxy = lib.start_proxy(
        PORT, R, config=os.path.join(os.path.dirname(os.path.abspath(__file__)), "saga_queue_gate1.yaml")
    )
    try:
        kept = asyncio.run(main(mode))
        print(
            f"DEFECT ({mode}): session s was ended, its held call refused, and it is still kept"
            if kept
            else "ok"
        )
    finally:
        lib.stop(proxy)
        lib.stop(sims)


if __name__ == "__main__":
    run("drain")
    run("remove")
