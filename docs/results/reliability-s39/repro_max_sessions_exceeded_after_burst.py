"""max_sessions is exceeded for good after a burst: sessions with calls in flight cannot be evicted, so a
burst of N > max_sessions concurrent sessions leaves N in the table, and since each later new session
evicts only one, the table stays at N (until session_idle_ttl_s, an hour by default). Prints DEFECT
while present."""

import asyncio

import aiohttp
import lib

PORT = 19290
B = f"http://127.0.0.1:{PORT}"
R = ["http://127.0.0.1:19291", "http://127.0.0.1:19292"]


async def main():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as s:
        res = await asyncio.gather(
            *(lib.chat(s, B, f"hello {i}", sid=f"c{i}", max_tokens=200, timeout=60) for i in range(100))
        )
        print("burst:", sum(r[0] == 200 for r in res), "of 100 ok; sessions:", lib.summary(B)["sessions"])
        for i in range(10):
            await lib.chat(s, B, f"later {i}", sid=f"later{i}")
        n = lib.summary(B)["sessions"]
        print("after 10 more one-by-one sessions:", n, "(max_sessions 20)")
        return n


if __name__ == "__main__":
    sims = lib.start_sims(19291, 2, 5000)
    proxy = lib.start_proxy(PORT, R, ["--max-sessions", "20"])
    try:
        n = asyncio.run(main())
        print(f"DEFECT: {n} sessions kept with max_sessions 20" if n > 21 else "ok")
    finally:
        lib.stop(proxy)
        lib.stop(sims)
