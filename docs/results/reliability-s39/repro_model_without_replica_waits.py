"""With replicas serving different models, a new workflow naming a model whose every replica is drained or
down waits in admission (up to max_wait_s, 300 s) instead of the 503 the same call gets from any policy
without admission, or from saga when no replica at all is healthy. Prints DEFECT while present."""

import asyncio
import time

import aiohttp
import lib

PORT = 19280
B = f"http://127.0.0.1:{PORT}"
R = ["http://127.0.0.1:19281", "http://127.0.0.1:19282"]


async def main():
    async with aiohttp.ClientSession() as s:
        st, *_ = await lib.chat(s, B, "hi", sid="m2a", model="m2")
        print("model m2 served:", st)
        print("drain the m2 replica:", lib.post(f"{B}/saga/v1/replicas/drain", {"url": R[1]})[0])
        st, dt, text, _ = await lib.chat(s, B, "hi there", sid="m2b", model="m2", timeout=10)
        print("new m2 workflow:", st, f"{dt:.1f}s", text[:150])
        return st


if __name__ == "__main__":
    s1 = lib.start_sims(19281, 1, 200)
    s2 = lib.start_sims(19282, 1, 200, ["--model", "m2"])
    proxy = lib.start_proxy(PORT, R)
    try:
        time.sleep(2.5)  # the first models round
        st = asyncio.run(main())
        print("DEFECT: the call waited in admission instead of a 503" if st == "timeout" else "ok")
    finally:
        lib.stop(proxy)
        lib.stop(s1)
        lib.stop(s2)
