# ruff: noqa
"""d04: 30 coding agents (session ids, compaction every 10 calls) on 2 small replicas: under saga some agents,
once admitted and a few calls in, have a call sit at the replica for tens of seconds (workflow-age priority
behind older workflows while admission has reserved more than the KV); round-robin never stalls a call that long."""

import asyncio, json, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aiohttp
from harness import start_sims, start_proxy, stop_all, wait_ready, agent, get

N, CALLS, CE = 30, 120, 10


async def run(policy, base):
    reps = start_sims(base, 2)
    url = start_proxy(base + 10, reps, policy)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as s:
            await wait_ready(s, url)
            log = []
            t0 = time.time()
            peak = {"res": 0, "cap": 0}
            done = False

            async def mon():
                while not done:
                    st = await get(s, url, "/saga/v1/state")
                    if "admission" in st:
                        peak["res"] = max(
                            peak["res"], max(st["admission"]["reserved_tokens"].values() or [0])
                        )
                        peak["cap"] = st["replicas"][0]["kv_capacity_tokens"]
                    await asyncio.sleep(1)

            m = asyncio.create_task(mon())

            async def one(a):
                await agent(
                    s,
                    url,
                    a,
                    CALLS,
                    compact_every=CE,
                    log=log,
                    headers={"X-Session-ID": f"agent-{a}"},
                    timeout=200,
                )
                return time.time() - t0

            tct = sorted(await asyncio.gather(*[one(a) for a in range(N)]))
            done = True
            await m
            mid = sorted(((l[3], l[0], l[1]) for l in log if l[1] >= 1), reverse=True)
            first = max(l[3] for l in log if l[1] == 0)
            return dict(
                tct50=tct[N // 2],
                tctmax=tct[-1],
                mid=mid[:3],
                over10=sum(1 for x in mid if x[0] > 10),
                first=first,
                peak=peak,
            )
    finally:
        stop_all()


async def main():
    sg = await run("saga", 23100)
    rr = await run("round-robin", 23120)
    for n, r in (("saga", sg), ("round-robin", rr)):
        print(
            f"{n}: task time p50 {r['tct50']:.1f}s max {r['tctmax']:.1f}s; slowest calls after an agent's first (s, agent, call#) {[(round(a, 2), b, c) for a, b, c in r['mid']]}; such calls over 10 s: {r['over10']}; slowest first call {r['first']:.2f}s; peak reserved on a replica {r['peak']['res']} of {r['peak']['cap']} tokens KV"
        )
    w = sg["mid"][0]
    if w[0] > 10 and w[0] > 5 * rr["mid"][0][0]:
        print(
            f"DEFECT: an admitted agent's call #{w[2]} (agent {w[1]}) stalled {w[0]:.1f}s mid-task under saga ({sg['over10']} calls after a first call took over 10 s; peak reservation {sg['peak']['res']} tokens on a {sg['peak']['cap']}-token replica) vs worst {rr['mid'][0][0]:.2f}s under round-robin; task time p50/max saga {sg['tct50']:.1f}/{sg['tctmax']:.1f}s, round-robin {rr['tct50']:.1f}/{rr['tctmax']:.1f}s"
        )
    else:
        print(f"OK: worst mid-task call saga {w[0]:.2f}s, round-robin {rr['mid'][0][0]:.2f}s")


try:
    asyncio.run(main())
finally:
    stop_all()
