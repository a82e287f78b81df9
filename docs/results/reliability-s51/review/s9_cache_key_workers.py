# ruff: noqa
# S9: an app sending one prompt_cache_key with every call (16 clients in a loop, distinct prompts): calls served in a
# fixed time, saga snap51 (1 and 2 workers) vs snap55 vs round-robin; end state drained to zero.
import asyncio, json, sys, statistics, time

sys.path.insert(0, "/tmp/rev51")
from h import *

P = int(sys.argv[1]) if len(sys.argv) > 1 else 24800
DUR = 8.0


async def client(s, url, cid, stop_at, done, errs):
    i = 0
    while time.time() < stop_at:
        body_extra = {"prompt_cache_key": "app-key-1", "ignore_eos": True}
        msgs = [
            {"role": "system", "content": "App helper. " + words(300, 4)},
            {"role": "user", "content": f"q {cid}-{i} " + words(200, cid * 1000 + i)},
        ]
        try:
            st, txt, dt, h = await chat(s, url, msgs, max_tokens=128, extra=body_extra, timeout=60)
            if st == 200:
                done.append(dt)
            else:
                errs.append(st)
        except Exception as e:
            errs.append(type(e).__name__)
        i += 1


async def run(tree, sims, port, extra):
    pp, url = start_proxy(tree, port, sims, extra)
    done, errs = [], []
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url, 2)
            stop_at = time.time() + DUR
            await asyncio.gather(*[client(s, url, c, stop_at, done, errs) for c in range(16)])
            await asyncio.sleep(2.5)
            st = await get(s, url, "/saga/v1/state")
    finally:
        stop(pp)
    return (
        len(done),
        round(statistics.mean(done), 3) if done else None,
        errs[:5],
        st.get("spills"),
        st.get("in_flight"),
        [(r.get("in_flight"), r.get("queued")) for r in st.get("replicas", [])],
    )


async def main():
    sp, sims = start_sims(
        "/tmp/snap51",
        P,
        2,
        profile="llama3-8b-h100",
        blocks=int(sys.argv[2]) if len(sys.argv) > 2 else 3000,
        extra=["--time-scale", "4"],
    )
    cfgs = [
        ("s51", "/tmp/snap51", ()),
        ("s55", "/tmp/snap55", ()),
        ("rr", "/tmp/snap51", ("--policy", "round-robin")),
        ("s51-w2", "/tmp/snap51", ("--workers", "2")),
    ]
    R = {c[0]: [] for c in cfgs}
    port = P + 10
    try:
        for rnd in range(2):
            for label, tree, extra in cfgs:
                R[label].append(await run(tree, sims, port, extra))
                port += 1
    finally:
        stop_all()
    calls = {k: [x[0] for x in v] for k, v in R.items()}
    stuck = any(x[4] for v in R.values() for x in v)
    bad = (
        stuck
        or statistics.mean(calls["s51"]) < 0.9 * statistics.mean(calls["rr"])
        or statistics.mean(calls["s51-w2"]) < 0.9 * statistics.mean(calls["rr"])
    )
    print(
        ("DEFECT" if bad else "OK")
        + f": blocks={sys.argv[2:]} calls in {DUR}s per round {calls}; detail (calls, mean latency s, errors, spills, end in_flight, replicas in_flight/queued) {R}"
    )


asyncio.run(main())
