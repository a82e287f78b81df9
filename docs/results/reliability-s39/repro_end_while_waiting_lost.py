"""POST /saga/v1/sessions/{id}/end (or X-Session-End on a parallel call) while a call of the session waits in
admission: the end answers 200 but is dropped (the session is kept because a call of it waits, and nothing
ends it once that call is served). After the call, the session is still listed and its workflow holds a KV
reservation (the predictor forgot it: "hold for the longest allowed", max_hold_s = 120 s) instead of
freeing it. Prints DEFECT while present."""

import asyncio

import aiohttp
import lib

SIM, PORT = 19241, 19240
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]


def row(sid):
    return next((x for x in lib.get(f"{B}/saga/v1/sessions")[1]["sessions"] if x["session_id"] == sid), None)


async def main():
    async with aiohttp.ClientSession() as s:
        # a one-shot workflow that holds most of the one replica's admission room (for max_hold_s)
        st, *_ = await lib.chat(s, B, lib.prompt(1500, "a"), sid="filler", headers={"X-Session-End": "true"})
        st, *_ = await lib.chat(s, B, lib.prompt(1500, "b"), sid="filler2")
        print("reserved:", lib.summary(B)["reserved"])
        waiter = asyncio.create_task(lib.chat(s, B, lib.prompt(1500, "c"), sid="E", timeout=60))
        await asyncio.sleep(1)
        print("waiting:", lib.summary(B)["waiting"], "| end E:", lib.post(f"{B}/saga/v1/sessions/E/end"))
        # make room: end the filler that holds the replica
        print("end filler2:", lib.post(f"{B}/saga/v1/sessions/filler2/end")[0])
        st, dt, *_ = await waiter
        print("E's waiting call:", st, f"{dt:.1f}s")
    await asyncio.sleep(2.5)  # past the 1 s housekeeping tick
    r, summ = row("E"), lib.summary(B)
    print("after E's call:", r, "| reserved:", summ["reserved"], "live:", summ["live"])
    return r, summ


if __name__ == "__main__":
    sims = lib.start_sims(SIM, 1, 200)
    proxy = lib.start_proxy(PORT, R)
    try:
        r, summ = asyncio.run(main())
        if r is not None:
            print(
                "DEFECT: session E, ended while its call waited, is still listed"
                + (" and still reserves KV" if summ["live"] else "")
            )
        else:
            print("ok")
    finally:
        lib.stop(proxy)
        lib.stop(sims)
