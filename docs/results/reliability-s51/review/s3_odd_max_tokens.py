# ruff: noqa
# S3: odd max_tokens values, solo and beside a running call of the session: status codes vs the sim directly and vs snap55.
import asyncio, json, sys

sys.path.insert(0, "/tmp/rev51")
from h import *

VALS = [0, -1, 1.5, "10", 10**12, None, 999999999, 4000, 1e3, True, [], {}]


async def run_tree(tree, port_base):
    sp, reps = start_sims(tree, port_base, 2)
    pp, url = start_proxy(tree, port_base + 10, reps)
    res = {}
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url, 2)
            for i, v in enumerate(VALS):
                for field, path, mk in [
                    (
                        "max_tokens",
                        "/v1/chat/completions",
                        lambda txt: {"model": "saga-sim", "messages": [{"role": "user", "content": txt}]},
                    ),
                    (
                        "max_completion_tokens",
                        "/v1/chat/completions",
                        lambda txt: {"model": "saga-sim", "messages": [{"role": "user", "content": txt}]},
                    ),
                    ("max_output_tokens", "/v1/responses", lambda txt: {"model": "saga-sim", "input": txt}),
                    ("max_tokens", "/v1/completions", lambda txt: {"model": "saga-sim", "prompt": txt}),
                    (
                        "max_tokens",
                        "/v1/messages",
                        lambda txt: {"model": "saga-sim", "messages": [{"role": "user", "content": txt}]},
                    ),
                ]:
                    sid = f"odd-{i}-{field}-{path}"
                    hdr = {"X-Session-ID": sid}
                    base = mk("first " + sid)
                    base[field] = 16
                    await post(s, url, path, base, hdr)
                    # direct to sim
                    b = mk("direct " + sid)
                    b[field] = v
                    d = await post(s, reps[0], path, b, {})
                    solo = mk("solo " + sid)
                    solo[field] = v
                    so = await post(s, url, path, solo, hdr)
                    lng = mk("long " + sid)
                    lng[field] = 400
                    lt = asyncio.create_task(post(s, url, path, lng, hdr))
                    await asyncio.sleep(0.15)
                    bs = mk("beside " + sid)
                    bs[field] = v
                    be = await post(s, url, path, bs, hdr)
                    await lt
                    res[(repr(v), field, path)] = (d[0], so[0], be[0], be[1][:80] if be[0] >= 500 else "")
            st = await quiesce_state(s, url, 2)
            res["state"] = summarize(st)
    finally:
        stop_all()
    return res


async def main():
    a = await run_tree("/tmp/snap51", 24100)
    b = await run_tree("/tmp/snap55", 24200)
    diffs = []
    for k in a:
        if k == "state":
            continue
        d, so, be, msg = a[k]
        d0, so0, be0, _ = b[k]
        if (so, be) != (so0, be0) or so != d or be != d:
            diffs.append((k, "sim", d, "s51 solo/beside", so, be, "s55 solo/beside", so0, be0, msg))
    bad = [x for x in diffs if x[4] >= 500 or x[5] >= 500 or (x[4], x[5]) != (x[7], x[8])]
    print(
        ("DEFECT" if bad else "OK")
        + f": {len(a) - 1} cases; differences (case, sim, s51 solo, beside, s55 solo, beside)={diffs}; s51 end={a['state']} s55 end={b['state']}"
    )


asyncio.run(main())
