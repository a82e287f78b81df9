# ruff: noqa
"""d03: a heterogeneous fleet from the start: big replica (4000 blocks = 64k KV tokens) and small replica (250
blocks = 4k tokens; context limit 3,984), both idle (BG=2 adds two short background agents first; with them
saga passed in an exploration run). 8 new sessions open with ~5.3k-token prompts (fit only the big one), one after the other, 2 calls each.
DEFECT if any of them is placed on the small replica (vLLM's 400) although the proxy knows both capacities."""

import asyncio, os, random, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import *  # noqa

WORKERS = int(os.environ.get("WORKERS", 1))
POL = os.environ.get("POL", "saga")
BASEP = int(os.environ.get("BASEP", 23500))


async def main_async(base, small):
    rng = random.Random(2)
    async with aiohttp.ClientSession() as s:
        bg = [
            asyncio.create_task(
                agent(s, base, f"bg{i}-{time.time()}", 30, 300, 30, 0.3, random.Random(i), max_tokens=10)
            )
            for i in range(int(os.environ.get("BG", 0)))
        ]
        await asyncio.sleep(2)
        fails = tot = on_small = 0
        detail = []
        for k in range(8):
            sid = f"big{k}-{time.time()}"
            msgs = [{"role": "user", "content": text(4000, rng)}]
            for i in range(2):
                st, j, rep, dt = await call(s, base, sid, msgs, max_tokens=10)
                tot += 1
                fails += st != 200
                on_small += bool(rep and rep.endswith(str(small)))
                detail.append((st, rep and rep[-5:]))
                if st == 200:
                    msgs += [
                        {"role": "assistant", "content": j["choices"][0]["message"]["content"]},
                        {"role": "user", "content": text(50, rng)},
                    ]
                await asyncio.sleep(0.2)
        bgr = await asyncio.gather(*bg)
        print("calls", detail)
        print(
            "background agents ok",
            [r[0] for r in bgr],
            "replicas",
            [sorted(set(x[-5:] for x in r[2] if x)) for r in bgr],
        )
        return fails, tot, on_small


def main():
    pbig, psmall, pp = BASEP, BASEP + 1, BASEP + 5
    try:
        start_sim(pbig, blocks=4000)
        start_sim(psmall, blocks=250)
        start_proxy(
            pp, [f"http://127.0.0.1:{pbig}", f"http://127.0.0.1:{psmall}"], policy=POL, workers=WORKERS
        )
        time.sleep(1.5)
        base = f"http://127.0.0.1:{pp}"
        caps = {
            r["replica_id"][-5:]: r["kv_capacity_tokens"]
            for r in get_json(base + "/saga/v1/replicas")["replicas"]
        }
        fails, tot, on_small = asyncio.run(main_async(base, psmall))
    finally:
        stop_all()
    fig = f"policy {POL}, workers {WORKERS}, capacities {caps}: {on_small}/{tot} calls of ~5.3k-token sessions sent to the 4k replica, {fails}/{tot} failed (400)"
    print(
        (
            "DEFECT: a session whose prompt exceeds the small replica's known KV is placed there: "
            if fails
            else "OK: "
        )
        + fig
    )


main()
