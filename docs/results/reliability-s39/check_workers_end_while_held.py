import asyncio
import os as _os
import sys

import aiohttp

HERE = _os.path.dirname(_os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lib  # noqa: E402 (after its folder is on the path)

PORT, SIM = 19650, 19651
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]


async def main():
    async with aiohttp.ClientSession() as s:
        for sid in ["w0", "c"]:
            print(sid, (await lib.chat(s, B, "first " + sid, sid=sid))[0])
        busy = asyncio.create_task(lib.chat(s, B, "hello", sid="busy", max_tokens=1000))
        await asyncio.sleep(0.5)
        held = {
            sid: asyncio.create_task(lib.chat(s, B, "second " + sid, sid=sid))
            for sid in ["w0", "c", "w1", "d"]
        }
        gone = asyncio.create_task(lib.chat(s, B, "second gone", sid="w2", timeout=1.0))
        await asyncio.sleep(0.5)
        print("held", lib.state(B)["queued"])
        for sid in ["w0", "c", "w1", "d"]:
            print("end", sid, lib.post(f"{B}/saga/v1/sessions/{sid}/end"))
        print("gone", (await gone)[0])
        for sid, t in held.items():
            print(sid, (await t)[0])
        await busy
        await asyncio.sleep(1.5)
        print(lib.summary(B))
        print([x["session_id"] for x in lib.get(f"{B}/saga/v1/sessions")[1]["sessions"]])
        print(lib.get(f"{B}/saga/v1/queue")[1])


sims = lib.start_sims(SIM, 1, 20000)
proxy = lib.start_proxy(PORT, R, config=HERE + "/saga_queue_gate1.yaml", extra=["--workers", "2"])
try:
    asyncio.run(main())
finally:
    lib.stop(proxy)
    lib.stop(sims)
