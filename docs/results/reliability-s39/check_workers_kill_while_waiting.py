import asyncio
import os
import os as _os
import signal
import sys
import time

import aiohttp

HERE = _os.path.dirname(_os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lib  # noqa: E402 (after its folder is on the path)

SIM, PORT = 19451, 19450
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]
victim = int(sys.argv[1])


async def main(proxy):
    async with aiohttp.ClientSession() as s:
        st, *_ = await lib.chat(s, B, lib.prompt(1500, "a"), sid="fill0")
        print("fill0 (owner 1)", st)
        sids = ["w0", "w1", "c", "d", "run0"]  # 0,0,1,1
        w = {
            sid: asyncio.create_task(lib.chat(s, B, lib.prompt(900, "bcdegh"[i]), sid=sid, timeout=25))
            for i, sid in enumerate(sids)
        }
        await asyncio.sleep(1.5)
        print("before", lib.summary(B))
        pids = lib.worker_pids(proxy)
        print(pids)
        os.kill(pids[victim], signal.SIGKILL)
        t0 = time.time()
        for sid, t in w.items():
            st, dt, text, _h = await t
            print(sid, st, round(time.time() - t0, 2), text[:120])
        await asyncio.sleep(2)
        print("after", lib.summary(B), lib.worker_pids(proxy))
        # a fresh new workflow should be admitted (fill0's hold may still be there)
        st, dt, text, _h = await lib.chat(s, B, lib.prompt(300, "z"), sid="late", timeout=10)
        print("late", st, round(dt, 2), text[:100])
        await asyncio.sleep(1)
        print("end", lib.summary(B))
        print(lib.get(f"{B}/saga/v1/queue")[1])


sims = lib.start_sims(SIM, 1, 200)
proxy = lib.start_proxy(PORT, R, extra=["--workers", "2"])
try:
    asyncio.run(main(proxy))
finally:
    lib.stop(proxy)
    lib.stop(sims)
