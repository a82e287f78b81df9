# ruff: noqa
"""d02: two replicas of 64k KV tokens; four agent sessions with ~5.4k-token contexts run on them; replica A then
restarts (same URL) with 250 blocks = 4,000 tokens of KV (its context limit 3,984). The proxy reads the new
capacity. Then: the old sessions go on (4 calls each) and 8 new sessions with ~5.3k-token prompts start.
Replica B (64k) could serve every one of these calls.
DEFECT if calls keep going to A and fail with 400 although B has room."""

import asyncio, os, random, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import *  # noqa

WORKERS = int(os.environ.get("WORKERS", 1))
POL = os.environ.get("POL", "saga")
BASEP = int(os.environ.get("BASEP", 23970))


async def calls(base, sid, msgs, n, rng):
    out = []
    async with aiohttp.ClientSession() as s:
        for i in range(n):
            st, j, rep, dt = await call(s, base, sid, msgs, max_tokens=10)
            out.append((st, rep and rep[-5:]))
            if st == 200:
                msgs += [
                    {"role": "assistant", "content": j["choices"][0]["message"]["content"]},
                    {"role": "user", "content": text(100, rng)},
                ]
            await asyncio.sleep(0.3)
    return out


def main():
    pa, pb, pp = BASEP, BASEP + 1, BASEP + 5
    try:
        a = start_sim(pa, blocks=4000)
        start_sim(pb, blocks=4000)
        start_proxy(pp, [f"http://127.0.0.1:{pa}", f"http://127.0.0.1:{pb}"], policy=POL, workers=WORKERS)
        time.sleep(1.5)
        base = f"http://127.0.0.1:{pp}"
        rng = random.Random(1)
        sids = {}
        for k in range(4):
            sid = f"r{k}-{time.time()}"
            msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": text(4000, rng)}]
            out = asyncio.run(calls(base, sid, msgs, 2, rng))
            sids[sid] = (msgs, out[-1][1])
        on_a = sum(1 for v in sids.values() if v[1] == str(pa))
        stop(a)
        time.sleep(1)
        a = start_sim(pa, blocks=250)
        time.sleep(3)
        caps = {
            r["replica_id"][-5:]: r["kv_capacity_tokens"]
            for r in get_json(base + "/saga/v1/replicas")["replicas"]
        }
        print("capacities after restart", caps)
        old_fail = old_tot = 0
        for sid, (msgs, rep) in sids.items():
            out = asyncio.run(calls(base, sid, msgs, 4, rng))
            print("old session, was on", rep, out)
            if rep == str(pa):
                old_tot += len(out)
                old_fail += sum(1 for o in out if o[0] != 200)
        new_fail = new_tot = 0
        for k in range(8):
            out = asyncio.run(
                calls(base, f"new{k}-{time.time()}", [{"role": "user", "content": text(4000, rng)}], 2, rng)
            )
            print("new session", out)
            new_tot += len(out)
            new_fail += sum(1 for o in out if o[0] != 200)
    finally:
        stop_all()
    fig = (
        f"A restarted with 4,000 KV tokens (proxy reads {caps}); calls of the {on_a} sessions bound to A: "
        f"{old_fail}/{old_tot} failed (400 context length); new sessions with ~5.3k-token prompts: {new_fail}/{new_tot} calls failed"
    )
    if old_fail or new_fail:
        print(
            "DEFECT: sessions stay on / are placed on a replica whose known KV can no longer hold them: "
            + fig
        )
    else:
        print("OK: " + fig)


main()
