import asyncio
import os as _os
import sys
import time

import aiohttp

HERE = _os.path.dirname(_os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lib  # noqa: E402 (after its folder is on the path)

SIM, PORT = 19421, 19420
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}", f"http://127.0.0.1:{SIM + 1}"]
mode = sys.argv[1]


async def main():
    async with aiohttp.ClientSession() as s:
        for i, sid in enumerate(["fill0", "fill1"]):
            st, _dt, text, _h = await lib.chat(s, B, lib.prompt(1500, "af"[i]), sid=sid)
            print(sid, st)
        print(lib.summary(B))
        w = {
            sid: asyncio.create_task(lib.chat(s, B, lib.prompt(1500, "bcde"[i]), sid=sid, timeout=25))
            for i, sid in enumerate(["w0", "w3", "w1", "c"])
        }
        await asyncio.sleep(1.5)
        print("before", lib.summary(B))
        t0 = time.time()
        for r in R:
            print(mode, r, lib.post(f"{B}/saga/v1/replicas/{mode}", {"url": r}))
        for sid, t in w.items():
            st, _dt, text, _h = await t
            print(sid, st, round(time.time() - t0, 2), text[:150])
        await asyncio.sleep(1)
        print(lib.summary(B))
        print(lib.get(f"{B}/saga/v1/sessions")[1])


sims = lib.start_sims(SIM, 2, 200)
proxy = lib.start_proxy(PORT, R, extra=["--workers", "2"])
try:
    asyncio.run(main())
finally:
    lib.stop(proxy)
    lib.stop(sims)
