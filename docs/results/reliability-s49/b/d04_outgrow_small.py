# ruff: noqa
"""d04: big replica (4000 blocks = 64k KV tokens) + small replica (250 blocks = 4k tokens, context limit 3,984),
same model. 8 agents start with ~1.5k-token prompts and grow ~450 tokens a call for 10 calls (to ~6k),
started 0.5 s apart. Policies saga, least-request, round-robin on fresh replicas each.
DEFECT if under saga calls fail with 400 (context past the small replica's limit) while the big replica has room."""

import asyncio, os, random, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import *  # noqa

WORKERS = int(os.environ.get("WORKERS", 1))
BP = int(os.environ.get("BP", 23570))


async def run(base, small):
    rec = []
    async with aiohttp.ClientSession() as s:

        async def one(i):
            await asyncio.sleep(0.5 * i)
            return await agent(
                s,
                base,
                f"g{i}-{time.time()}",
                10,
                1100,
                300,
                0.3,
                random.Random(i),
                max_tokens=30,
                record=rec,
            )

        res = await asyncio.gather(*[one(i) for i in range(8)])
    failed = [r for r in rec if r[2] != 200]
    return dict(
        tasks_ok=sum(r[0] for r in res),
        calls=len(rec),
        failed=len(failed),
        failed_on_small=sum(1 for r in failed if r[3] and r[3].endswith(str(small))),
        calls_on_small=sum(1 for r in rec if r[3] and r[3].endswith(str(small))),
    )


def main():
    out = {}
    try:
        for k, pol in enumerate(["saga", "least-request", "round-robin"]):
            pbig, psm, pp = BP + 10 * k, BP + 1 + 10 * k, BP + 5 + 10 * k
            start_sim(pbig, blocks=4000)
            start_sim(psm, blocks=250)
            start_proxy(
                pp, [f"http://127.0.0.1:{pbig}", f"http://127.0.0.1:{psm}"], policy=pol, workers=WORKERS
            )
            time.sleep(1.5)
            out[pol] = asyncio.run(run(f"http://127.0.0.1:{pp}", psm))
            print(pol, out[pol], flush=True)
            stop_all()
    finally:
        stop_all()
    s = out["saga"]
    fig = "; ".join(
        f"{p}: tasks ok {o['tasks_ok']}/8, failed calls {o['failed']}/{o['calls']} ({o['failed_on_small']} on the small replica), calls on small {o['calls_on_small']}"
        for p, o in out.items()
    )
    print(
        (
            "DEFECT: saga lets agents outgrow the small replica's known KV (400s) while the big one has room: "
            if s["failed"]
            else "OK: "
        )
        + fig
    )


main()
