# ruff: noqa
"""d01 of review B (reliability-s49/b/d01_hetero_speed.py) with the two replicas' simulator profiles taken from
FAST and SLOW (defaults: the review's). d01: a fast replica (llama3-8b-h100 profile) and a slow one (llama3-70b-tp4-a100), same KV (4000 blocks),
same model. 24 coding agents x 6 calls start together. Each policy runs on fresh replicas in turn.
DEFECT if saga's mean task time is >15% worse than least-request's while saga splits calls ~evenly."""

import asyncio, os, random, sys, time

# the review's helpers: docs/results/reliability-s49/b/_common.py
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reliability-s49", "b"))
from _common import *  # noqa

N, CALLS, TS, BLOCKS = 24, 6, 2.0, 4000
BP = int(os.environ.get("BP", 23830))
WORKERS = int(os.environ.get("WORKERS", 1))


async def run(base):
    async with aiohttp.ClientSession() as s:
        t0 = time.time()
        res = await asyncio.gather(
            *[
                agent(
                    s,
                    base,
                    f"a{i}-{time.time()}",
                    CALLS,
                    800,
                    400,
                    0.3,
                    random.Random(i),
                    max_tokens=100,
                    timeout=180,
                )
                for i in range(N)
            ]
        )
        return res, time.time() - t0


def main():
    out = {}
    try:
        for k, pol in enumerate(["round-robin", "least-request", "saga"]):
            pf, psl, pp = BP + 10 * k, BP + 1 + 10 * k, BP + 5 + 10 * k
            start_sim(pf, blocks=BLOCKS, time_scale=TS, profile=os.environ.get("FAST", "llama3-8b-h100"))
            start_sim(
                psl, blocks=BLOCKS, time_scale=TS, profile=os.environ.get("SLOW", "llama3-70b-tp4-a100")
            )
            start_proxy(
                pp,
                [f"http://127.0.0.1:{pf}", f"http://127.0.0.1:{psl}"],
                policy=pol,
                time_scale=TS,
                workers=WORKERS,
            )
            time.sleep(1.5)
            res, wall = asyncio.run(run(f"http://127.0.0.1:{pp}"))
            tct = [r[1] for r in res if r[0]]
            fast = sum(1 for r in res for rep in r[2] if rep and rep.endswith(str(pf)))
            slow = sum(1 for r in res for rep in r[2] if rep and rep.endswith(str(psl)))
            out[pol] = dict(
                ok=sum(r[0] for r in res),
                mean=sum(tct) / max(1, len(tct)),
                p90=pct(tct, 0.9),
                wall=wall,
                fast=fast,
                slow=slow,
            )
            o = out[pol]
            print(
                f"{pol}: tasks ok {o['ok']}/{N}, TCT mean {o['mean']:.2f}s p90 {o['p90']:.2f}s, wall {wall:.2f}s, "
                f"calls fast/slow {fast}/{slow}",
                flush=True,
            )
            stop_all()
    finally:
        stop_all()
    s, lr, rr = out["saga"], out["least-request"], out["round-robin"]
    ratio = s["mean"] / lr["mean"]
    fig = (
        f"saga TCT mean {s['mean']:.2f}s p90 {s['p90']:.2f}s calls fast/slow {s['fast']}/{s['slow']}; "
        f"least-request {lr['mean']:.2f}s p90 {lr['p90']:.2f}s calls {lr['fast']}/{lr['slow']}; "
        f"round-robin {rr['mean']:.2f}s; saga/least-request = {ratio:.2f}x"
    )
    if ratio > 1.15 and s["slow"] >= 0.4 * (s["fast"] + s["slow"]):
        print("DEFECT: saga ignores replica speed in a mixed fast/slow fleet: " + fig)
    else:
        print("OK: " + fig)


main()
