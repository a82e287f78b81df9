# ruff: noqa
"""d01: a coding agent that compacts its history and names no session (OpenHands / SWE-agent / Codex without
prompt_cache_key) is made a brand-new workflow at every compaction: its next call waits in admission behind new
work, and the sessions it left behind keep their KV reservations (one agent holding several)."""

import asyncio, json, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aiohttp
from harness import start_sims, start_proxy, stop_all, wait_ready, agent, get, chat

N, CALLS, CE = 30, 80, 10
q = lambda v, p: sorted(v)[min(len(v) - 1, int(len(v) * p))]


async def one_agent_holds(base):
    reps = start_sims(base, 2)
    url = start_proxy(base + 10, reps, "saga")
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url)
            log = []
            await agent(
                s, url, 1, 21, compact_every=10, log=log
            )  # 10 calls, compaction, 10 calls, compaction, 1 call
            st = await get(s, url, "/saga/v1/state")
            ses = await get(s, url, "/saga/v1/sessions")
            return (
                st["admission"]["live"],
                sum(st["admission"]["reserved_tokens"].values()),
                ses["total"],
                st["replicas"][0]["kv_capacity_tokens"],
            )
    finally:
        stop_all()


async def fleet(policy, base, hdr):
    reps = start_sims(base, 2)
    url = start_proxy(base + 10, reps, policy)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as s:
            await wait_ready(s, url)
            log = []
            t0 = time.time()

            async def one(a):
                h = {"X-Session-ID": f"agent-{a}"} if hdr else None
                r = await agent(s, url, a, CALLS, compact_every=CE, log=log, headers=h, timeout=200)
                return time.time() - t0, sum(1 for c in r if c[0] != 200)

            res = await asyncio.gather(*[one(a) for a in range(N)])
            tct = [x[0] for x in res]
            bad = sum(x[1] for x in res)
            comp = [l[3] for l in log if l[1] and l[1] % CE == 0]
            other = [l[3] for l in log if l[1] > CE and l[1] % CE != 0]
            st = await get(s, url, "/saga/v1/state")
            return dict(
                tct50=q(tct, 0.5),
                tctmax=max(tct),
                comp50=q(comp, 0.5),
                comp90=q(comp, 0.9),
                other50=q(other, 0.5),
                bad=bad,
                sessions=st["sessions"],
            )
    finally:
        stop_all()


async def main():
    live, reserved, nses, cap = await one_agent_holds(23300)
    print(
        f"one agent, 21 calls, compacting every 10, no session id: {nses} sessions, {live} live reservations, {reserved} tokens reserved right after its last call (replica KV {cap} tokens each)",
        flush=True,
    )
    r = {}
    for name, pol, base, hdr in (
        ("saga-noid", "saga", 23320, False),
        ("saga-id", "saga", 23340, True),
        ("rr-noid", "round-robin", 23360, False),
    ):
        r[name] = await fleet(pol, base, hdr)
        x = r[name]
        print(
            f"{name}: task time p50 {x['tct50']:.1f}s max {x['tctmax']:.1f}s; call after compaction p50 {x['comp50']:.2f}s p90 {x['comp90']:.2f}s; other calls p50 {x['other50']:.2f}s; errors {x['bad']}; sessions {x['sessions']}",
            flush=True,
        )
    a, b, c = r["saga-noid"], r["saga-id"], r["rr-noid"]
    ratio = a["comp50"] / b["comp50"]
    if live >= 2 and ratio > 2 and a["comp50"] > c["comp50"]:
        print(
            f"DEFECT: compaction without a session id: one agent left {live} live reservations ({reserved} tokens) across {nses} sessions; "
            f"30 agents on 2 replicas: the call after each compaction p50 {a['comp50']:.2f}s (p90 {a['comp90']:.2f}s) vs {b['comp50']:.2f}s when the agent names its session "
            f"({ratio:.1f}x) and {c['comp50']:.2f}s under round-robin; task time p50 {a['tct50']:.1f}s vs {b['tct50']:.1f}s with an id (round-robin {c['tct50']:.1f}s)"
        )
    else:
        print(
            f"OK: live {live}, compaction call p50 {a['comp50']:.2f}s vs {b['comp50']:.2f}s with id, rr {c['comp50']:.2f}s"
        )


try:
    asyncio.run(main())
finally:
    stop_all()
