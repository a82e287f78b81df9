"""A new workflow waiting in admission is not refused when every replica is removed (or drained): it stays
waiting (up to admission.max_wait_s, 300 s by default) while a new call arriving at the same moment gets an
immediate 503 "no healthy replica". Prints DEFECT while present."""

import asyncio
import time

import aiohttp
import lib

SIM, PORT = 19211, 19210
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}", f"http://127.0.0.1:{SIM + 1}"]


async def main(mode):
    async with aiohttp.ClientSession() as s:
        # two workflows that hold most of each replica's admission room (3200 tokens x 1.5 overcommit)
        for i in range(2):
            st, *_ = await lib.chat(s, B, lib.prompt(1500, "abcdefgh"[i]), sid=f"fill{i}")
            assert st == 200, st
        waiter = asyncio.create_task(lib.chat(s, B, lib.prompt(2000, "w"), sid="waiter", timeout=25))
        await asyncio.sleep(1.0)
        print("waiting before:", lib.summary(B)["waiting"])
        for r in R:
            print(mode, r, lib.post(f"{B}/saga/v1/replicas/{mode}", {"url": r})[0])
        t0 = time.time()
        st, dt, text, _ = await lib.chat(s, B, "hello", sid="newcomer", timeout=5)
        print(f"new call after {mode}: {st} in {dt:.2f}s {text[:100]}")
        st, dt, text, _ = await waiter
        print(f"waiting call: {st} after {time.time() - t0:.1f}s since the {mode} {text[:100]}")
        print("state:", lib.summary(B))
        return st


def run(mode):
    sims = lib.start_sims(SIM, 2, 200)
    proxy = lib.start_proxy(PORT, R)
    try:
        st = asyncio.run(main(mode))
        print(
            "DEFECT: the waiting call was not refused once no replica was left" if st == "timeout" else "ok"
        )
    finally:
        lib.stop(proxy)
        lib.stop(sims)


if __name__ == "__main__":
    run("remove")
    run("drain")
