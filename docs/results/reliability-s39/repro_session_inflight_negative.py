"""Ending a session (X-Session-End on one call of a fan-out, or POST /saga/v1/sessions/{id}/end) while
another of its calls is in flight, then reusing the id: the old call's finish is subtracted from the new
session, whose in_flight ends at -1. Such a session is never forgotten (idle expiry and max_sessions
eviction need in_flight == 0): it stays in /saga/v1/sessions for good. Prints DEFECT while present."""

import asyncio

import aiohttp
import lib

SIM, PORT = 19231, 19230
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}", f"http://127.0.0.1:{SIM + 1}"]


def row(sid):
    return next((x for x in lib.get(f"{B}/saga/v1/sessions")[1]["sessions"] if x["session_id"] == sid), None)


async def main(how):
    sid = f"S-{how}"
    async with aiohttp.ClientSession() as s:
        long1 = asyncio.create_task(lib.chat(s, B, lib.prompt(20, "a"), sid=sid, max_tokens=300))
        await asyncio.sleep(0.3)
        if how == "header":  # a parallel call of the fan-out says it is the last
            r = await lib.chat(
                s, B, lib.prompt(20, "b"), sid=sid, headers={"X-Session-End": "true"}, max_tokens=1
            )
            print("ending call:", r[0])
        else:
            print("admin end:", lib.post(f"{B}/saga/v1/sessions/{sid}/end")[0])
        long2 = asyncio.create_task(lib.chat(s, B, lib.prompt(20, "c"), sid=sid, max_tokens=600))  # id reused
        print("first call:", (await long1)[0], "session now:", row(sid))
        print("second call:", (await long2)[0])
    await asyncio.sleep(4)  # session_idle_ttl_s is 2 s here: an idle session is forgotten by now
    r = row(sid)
    print("4 s after its last call:", r, "| proxy in flight:", lib.summary(B)["in_flight"])
    return r


if __name__ == "__main__":
    sims = lib.start_sims(SIM, 2, 2000)
    proxy = lib.start_proxy(PORT, R, ["--session-idle-ttl-s", "2"])
    try:
        for how in ("header", "admin"):
            r = asyncio.run(main(how))
            print(
                f"DEFECT ({how}): session left with in_flight {r['in_flight']}, never forgotten"
                if r
                else "ok"
            )
    finally:
        lib.stop(proxy)
        lib.stop(sims)
