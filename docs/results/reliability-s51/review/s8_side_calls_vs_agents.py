# ruff: noqa
# S8: agents in tool-call gaps (KV held between calls) beside one session fanning out parallel calls: does spilling
# the fan-out onto the agents' replica cost the agents their cached prefixes? snap51 vs snap55, alternating, same sims.
import asyncio, json, sys, statistics, time

sys.path.insert(0, "/tmp/rev51")
from h import *

TS = 4.0
P = int(sys.argv[1]) if len(sys.argv) > 1 else 24700


async def agent(s, url, aid, tag, lat, cached):
    sysm = {"role": "system", "content": f"Agent {aid}. " + words(6000, 500 + aid)}
    msgs = [sysm, {"role": "user", "content": f"task {tag} " + words(40, aid)}]
    hdr = {"X-Session-ID": f"{tag}-ag-{aid}"}
    for i in range(6):
        st, txt, dt, h = await chat(s, url, msgs, headers=hdr, max_tokens=32)
        if st == 200:
            j = json.loads(txt)
            u = j.get("usage", {})
            if i:
                lat.append(dt * TS)
                cached.append(
                    ((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
                    / max(1, u.get("prompt_tokens", 1))
                )
            ans = j["choices"][0]["message"].get("content") or ""
        else:
            ans = ""
        msgs = msgs + [
            {"role": "assistant", "content": ans},
            {"role": "user", "content": f"out {i} " + words(150, 100 * aid + i)},
        ]
        await asyncio.sleep(0.6)


async def fanner(s, url, tag, fans):
    sysm = {"role": "system", "content": "Fanner. " + words(6000, 999)}
    u = {"role": "user", "content": "task " + tag}
    hdr = {"X-Session-ID": f"{tag}-fan"}
    await chat(s, url, [sysm, u], headers=hdr, max_tokens=16)
    for rnd in range(3):
        t = time.time()
        await asyncio.gather(
            *[
                chat(
                    s,
                    url,
                    [
                        sysm,
                        u,
                        {"role": "assistant", "content": "ok"},
                        {"role": "user", "content": f"sub {rnd}-{i} " + words(30, 50 * rnd + i)},
                    ],
                    headers=hdr,
                    max_tokens=300,
                    extra={"ignore_eos": True},
                )
                for i in range(6)
            ]
        )
        fans.append((time.time() - t) * TS)
        await asyncio.sleep(0.5)


async def run(tree, sims, port, tag):
    pp, url = start_proxy(tree, port, sims)
    lat, cached, fans = [], [], []
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url, 2)
            f = asyncio.create_task(fanner(s, url, tag, fans))
            await asyncio.sleep(0.3)
            await asyncio.gather(*[agent(s, url, a, tag, lat, cached) for a in range(4)], f)
            st = await get(s, url, "/saga/v1/state")
    finally:
        stop(pp)
    return statistics.mean(lat), statistics.mean(cached), statistics.mean(fans), st.get("spills")


async def main():
    sp, sims = start_sims(
        "/tmp/snap51", P, 2, profile="llama3-8b-h100", blocks=2200, extra=["--time-scale", str(TS)]
    )
    R = {"s51": [], "s55": []}
    port = P + 10
    try:
        for rnd in range(2):
            for label, tree in [("s51", "/tmp/snap51"), ("s55", "/tmp/snap55")]:
                R[label].append(await run(tree, sims, port, f"{label}r{rnd}"))
                port += 1
    finally:
        stop_all()
    f = lambda v: [tuple(round(x, 3) if isinstance(x, float) else x for x in t) for t in v]
    a_lat = statistics.mean(x[0] for x in R["s51"])
    b_lat = statistics.mean(x[0] for x in R["s55"])
    a_c = statistics.mean(x[1] for x in R["s51"])
    b_c = statistics.mean(x[1] for x in R["s55"])
    bad = a_lat > 1.1 * b_lat or a_c < b_c - 0.1
    print(
        ("DEFECT" if bad else "OK")
        + f": (agent mean latency sim s, agent mean cached share, fan-out mean sim s, spills) per round s51={f(R['s51'])} s55={f(R['s55'])}"
    )


asyncio.run(main())
