# ruff: noqa
"""CONCURRENCY clients sending chat calls for DURATION s, one fixed prompt (`same`) or a distinct prompt per call
(`distinct`): prints the calls answered, p50 and max latency, errors. Usage: python3 fixed_prompt_load.py PORT CONC DURATION same|distinct"""

import asyncio, json, sys, time, aiohttp

port, conc, dur, distinct = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "distinct"
lat = []
errs = {}


async def worker(w, s, end):
    i = 0
    while time.time() < end:
        i += 1
        text = (
            f"client {w} question {i}: tell me about number {i}"
            if distinct
            else "hello there, tell me a story"
        )
        body = {"model": "saga-sim", "messages": [{"role": "user", "content": text}], "max_tokens": 16}
        t = time.time()
        try:
            async with s.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json=body,
                timeout=aiohttp.ClientTimeout(total=150),
            ) as r:
                await r.read()
                if r.status != 200:
                    errs[r.status] = errs.get(r.status, 0) + 1
        except Exception as e:
            errs[type(e).__name__] = errs.get(type(e).__name__, 0) + 1
        lat.append(time.time() - t)


async def main():
    end = time.time() + dur
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(worker(w, s, end) for w in range(conc)))
    lat.sort()
    print(f"calls {len(lat)} in {dur:.0f}s+; p50 {lat[len(lat) // 2]:.2f}s max {lat[-1]:.1f}s errors {errs}")


asyncio.run(main())
