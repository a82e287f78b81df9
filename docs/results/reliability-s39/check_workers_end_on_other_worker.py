import asyncio
import os as _os
import sys

import aiohttp

HERE = _os.path.dirname(_os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lib  # noqa: E402 (after its folder is on the path)

SIM, PORT = 19441, 19440
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]


async def main():
    async with aiohttp.ClientSession() as s:
        st, *_ = await lib.chat(s, B, lib.prompt(1500, "a"), sid="fill0")
        print("fill0", st)
        sids = ["w0", "c"]  # owners 0, 1
        w = {
            sid: asyncio.create_task(lib.chat(s, B, lib.prompt(1500, "bcdegh"[i]), sid=sid, timeout=25))
            for i, sid in enumerate(sids)
        }
        # running calls
        r = {
            sid: asyncio.create_task(lib.chat(s, B, "hi " + sid, sid=sid, timeout=25, max_tokens=2000))
            for sid in ["run0_w2", "run1_d"]
        }
        await asyncio.sleep(1.5)
        print("before", lib.summary(B))
        for sid in ["w0", "c", "run0_w2", "run1_d", "fill0"]:
            for _k in range(2):
                print("end", sid, lib.post(f"{B}/saga/v1/sessions/{sid}/end"))
        print("after end", lib.summary(B))
        for sid, t in list(w.items()) + list(r.items()):
            st, dt, text, _h = await t
            print(sid, st, round(dt, 2), text[:100])
        await asyncio.sleep(1.5)
        print(lib.summary(B))
        print(lib.get(f"{B}/saga/v1/sessions")[1])


sims = lib.start_sims(SIM, 1, 200)
proxy = lib.start_proxy(PORT, R, extra=["--workers", "2"])
try:
    asyncio.run(main())
finally:
    lib.stop(proxy)
    lib.stop(sims)
