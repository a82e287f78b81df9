# ruff: noqa
"""d07: A and B both fast (llama3-8b-h100). B is then restarted at the same port as llama3-70b-tp4-a100
(moved to slower hardware). We then run rounds of agents
through the same proxy and, side by side, through a fresh saga proxy over the same two replicas.
DEFECT if the old proxy keeps B's slowness > 1 and keeps starving B (B share << fresh proxy's) with
worse task time."""

import asyncio, os, random, sys, time

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reliability-s49", "b")
)  # the helpers
from _common import *  # noqa

TS, BLOCKS = 2.0, 4000
A, B, P_OLD, P_NEW = 25600, 25601, 25605, 25606
N, CALLS = int(os.environ.get("N", 24)), 6


async def burst(base, tag):
    async with aiohttp.ClientSession() as s:
        res = await asyncio.gather(
            *[
                agent(
                    s,
                    base,
                    f"{tag}{i}-{time.time()}",
                    CALLS,
                    600,
                    300,
                    0.3,
                    random.Random(i),
                    max_tokens=100,
                    timeout=180,
                )
                for i in range(N)
            ]
        )
    tct = [r[1] for r in res if r[0]]
    a = sum(1 for r in res for rep in r[2] if rep and rep.endswith(str(A)))
    b = sum(1 for r in res for rep in r[2] if rep and rep.endswith(str(B)))
    return sum(r[0] for r in res), sum(tct) / max(1, len(tct)), a, b


def slowness(p):
    return {
        r["replica_id"].rsplit(":", 1)[-1]: round(r["slowness"], 2)
        for r in get_json(f"http://127.0.0.1:{p}/saga/v1/replicas")["replicas"]
    }


def main():
    try:
        start_sim(A, blocks=BLOCKS, time_scale=TS, profile="llama3-8b-h100")
        sb = start_sim(B, blocks=BLOCKS, time_scale=TS, profile="llama3-8b-h100")
        start_proxy(P_OLD, [f"http://127.0.0.1:{A}", f"http://127.0.0.1:{B}"], time_scale=TS)
        time.sleep(1.5)
        for k in range(2):
            ok, m, a, b = asyncio.run(burst(f"http://127.0.0.1:{P_OLD}", f"w{k}-"))
            print(
                f"phase1 round {k}: ok {ok}/{N} TCT {m:.2f}s calls A/B {a}/{b} slowness {slowness(P_OLD)}",
                flush=True,
            )
        stop(sb)
        time.sleep(1)
        start_sim(B, blocks=BLOCKS, time_scale=TS, profile="llama3-70b-tp4-a100")
        time.sleep(3)
        start_proxy(P_NEW, [f"http://127.0.0.1:{A}", f"http://127.0.0.1:{B}"], time_scale=TS)
        time.sleep(1.5)
        print(f"after restart: old slowness {slowness(P_OLD)}", flush=True)
        tot = {"old": [0, 0, []], "new": [0, 0, []]}
        for k in range(3):
            for name, p in (
                (("new", P_NEW), ("old", P_OLD))
                if os.environ.get("ORDER") == "newfirst"
                else (("old", P_OLD), ("new", P_NEW))
            ):
                ok, m, a, b = asyncio.run(burst(f"http://127.0.0.1:{p}", f"{name}{k}-"))
                tot[name][0] += a
                tot[name][1] += b
                tot[name][2].append(m)
                print(
                    f"phase2 round {k} {name}: ok {ok}/{N} TCT {m:.2f}s calls A/B {a}/{b} slowness {slowness(p)}",
                    flush=True,
                )
        so = slowness(P_OLD)
    finally:
        stop_all()
    o, n = tot["old"], tot["new"]
    om, nm = sum(o[2]) / 3, sum(n[2]) / 3
    fig = (
        f"after B restarted slow (70b-a100): old proxy calls A/B {o[0]}/{o[1]} TCT per round {[round(x, 2) for x in o[2]]}, slowness now {so}; "
        f"fresh proxy A/B {n[0]}/{n[1]} TCT per round {[round(x, 2) for x in n[2]]}; round-0 TCT old/fresh {o[2][0] / n[2][0]:.2f}x, mean {om / nm:.2f}x"
    )
    print(("DEFECT: " if om / nm > 1.10 else "OK: ") + fig)


main()
