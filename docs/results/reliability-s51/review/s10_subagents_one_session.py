# ruff: noqa
# S10: subagents in their parent's session (one X-Session-ID): 6 multi-call conversations at once, each growing;
# task time and prefix-cache hits, snap51 vs snap55 vs snap51 spill:false, alternating, same sims.
import asyncio, json, sys, statistics, time

sys.path.insert(0, "/tmp/rev51")
from h import *

TS = 4.0
P = int(sys.argv[1]) if len(sys.argv) > 1 else 24750
BLOCKS = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
NSUB = 6


async def sub(s, url, tag, j, shared, hdr, cached, calls):
    msgs = [shared, {"role": "user", "content": f"subtask {j} " + words(300, 700 + j)}]
    for i in range(5):
        st, txt, dt, h = await chat(s, url, msgs, headers=hdr, max_tokens=64, extra={"ignore_eos": True})
        if st != 200:
            calls.append(("err", st))
            return
        jj = json.loads(txt)
        u = jj.get("usage", {})
        calls.append(h.get("X-Saga-Replica", "")[-1])
        if i:
            cached.append(
                ((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
                / max(1, u.get("prompt_tokens", 1))
            )
        msgs = msgs + [
            {"role": "assistant", "content": jj["choices"][0]["message"].get("content") or ""},
            {"role": "user", "content": f"tool {i} " + words(500, 9000 + 10 * j + i)},
        ]


async def run(tree, sims, port, tag, extra):
    pp, url = start_proxy(tree, port, sims, extra)
    cached, calls = [], []
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url, 2)
            shared = {"role": "system", "content": f"Parent {tag}. " + words(2000, 5)}
            hdr = {"X-Session-ID": f"{tag}-parent"}
            await chat(s, url, [shared, {"role": "user", "content": "plan"}], headers=hdr, max_tokens=32)
            t = time.time()
            await asyncio.gather(*[sub(s, url, tag, j, shared, hdr, cached, calls) for j in range(NSUB)])
            dt = (time.time() - t) * TS
            st = await get(s, url, "/saga/v1/state")
    finally:
        stop(pp)
    errs = [c for c in calls if isinstance(c, tuple)]
    return round(dt, 2), round(statistics.mean(cached), 3), st.get("spills"), errs[:3]


async def main():
    open("/tmp/rev51/nospill.yaml", "w").write("policy: {preset: saga, stealing: {spill: false}}\n")
    sp, sims = start_sims(
        "/tmp/snap51", P, 2, profile="llama3-8b-h100", blocks=BLOCKS, extra=["--time-scale", str(TS)]
    )
    cfgs = [
        ("s51", "/tmp/snap51", ()),
        ("s55", "/tmp/snap55", ()),
        ("s51-nospill", "/tmp/snap51", ("--config", "/tmp/rev51/nospill.yaml")),
    ]
    R = {c[0]: [] for c in cfgs}
    port = P + 10
    try:
        for rnd in range(2):
            for label, tree, extra in cfgs:
                R[label].append(await run(tree, sims, port, f"{label}r{rnd}", extra))
                port += 1
    finally:
        stop_all()
    m = {k: round(statistics.mean(x[0] for x in v), 2) for k, v in R.items()}
    bad = m["s51"] > 1.1 * m["s55"]
    print(
        ("DEFECT" if bad else "OK")
        + f": blocks={BLOCKS} mean task time (sim s) {m}; per round (task s, cached share, spills, errors) {R}"
    )


asyncio.run(main())
