# ruff: noqa
"""Exploration: one big-KV replica and one small-KV replica; saga vs round-robin vs least-request."""

import asyncio, os, random, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import *  # noqa

BIG, SMALL = int(os.environ.get("BIG", 8000)), int(os.environ.get("SMALL", 400))
N = int(os.environ.get("N", 16))
CALLS = int(os.environ.get("CALLS", 6))
TS = float(os.environ.get("TS", 10))
POLICIES = os.environ.get("POLICIES", "round-robin,least-request,saga").split(",")
WORKERS = int(os.environ.get("WORKERS", 1))


async def run(base):
    rng = random.Random(1)
    async with aiohttp.ClientSession() as s:
        t0 = time.time()
        res = await asyncio.gather(
            *[
                agent(
                    s,
                    base,
                    f"a{i}-{rng.random():.6f}",
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
        for k, pol in enumerate(POLICIES):
            pb, ps, pp = 23600 + 10 * k, 23601 + 10 * k, 23605 + 10 * k
            a = start_sim(pb, blocks=BIG, time_scale=TS)
            b = start_sim(ps, blocks=SMALL, time_scale=TS)
            px = start_proxy(
                pp,
                [f"http://127.0.0.1:{pb}", f"http://127.0.0.1:{ps}"],
                policy=pol,
                time_scale=TS,
                workers=WORKERS,
            )
            time.sleep(1.5)
            res, wall = asyncio.run(run(f"http://127.0.0.1:{pp}"))
            ok = sum(r[0] for r in res)
            tct = [r[1] for r in res if r[0]]
            calls = {"big": 0, "small": 0}
            for r in res:
                for rep in r[2]:
                    if rep and str(pb) in rep:
                        calls["big"] += 1
                    elif rep and str(ps) in rep:
                        calls["small"] += 1
            pre = {
                "big": sim_metric(pb, "vllm:num_preemptions_total"),
                "small": sim_metric(ps, "vllm:num_preemptions_total"),
            }
            hit = {
                n: sim_metric(p, "vllm:prefix_cache_hits_total")
                / max(1, sim_metric(p, "vllm:prefix_cache_queries_total"))
                for n, p in (("big", pb), ("small", ps))
            }
            try:
                st = get_json(f"http://127.0.0.1:{pp}/saga/v1/replicas")
            except Exception as e:
                st = repr(e)
            errs = sorted({s for r in res for s in r[3] if s != 200})
            out[pol] = dict(
                ok=ok,
                mean=sum(tct) / max(1, len(tct)),
                p90=pct(tct, 0.9),
                wall=wall,
                calls=calls,
                preempt=pre,
                hit=hit,
                errs=errs,
            )
            print(pol, out[pol], flush=True)
            print("   replicas view:", str(st)[:600], flush=True)
            stop(px)
            stop(a)
            stop(b)
    finally:
        stop_all()


main()
