# ruff: noqa
"""/v1/completions conversations, one prompt_cache_key each; each sends ONE duplicate call at once (a client
retry / two samples) at turn 1, then 8 more turns alone. Before (4cd78d9) the key keeps naming the
conversation; now the key is 'shared' and /v1/completions is never inferred: every later call is a session of
its own, placed anew. Runs /tmp/snap49 and SAGA_TREE back to back; prints prefix-cache hit and replica
changes over turns 2-9."""

import sys

sys.path.insert(0, "/tmp/reviewC")
import h
from h import *

TARGET = h.TREE if h.TREE != "/tmp/snap49" else "/tmp/snap49b"  # (read before `one` sets h.TREE)

NCONV, TURNS = int(os.environ.get("NCONV", 16)), 10
BLOCKS = int(os.environ.get("BLOCKS", 1500))


async def conv(s, url, i, out):
    prompt = f"System: you are agent {i}. " + words(1500, 100 + i)
    last = None
    for t in range(TURNS):
        b = {"model": "saga-sim", "prompt": prompt, "max_tokens": 30, "prompt_cache_key": f"conv-{i}"}
        if t == 1:
            rs = await asyncio.gather(post(s, url, "/v1/completions", b), post(s, url, "/v1/completions", b))
        else:
            rs = [await post(s, url, "/v1/completions", b)]
        st, txt, dt, hd = rs[0]
        if st != 200:
            out["fail"] += 1
            return
        j = json.loads(txt)
        rep = hd.get("X-Saga-Replica")
        if t >= 2:
            u = j["usage"]
            c = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            out["cached"] += c
            out["prompt"] += u["prompt_tokens"]
            out["lat"].append(dt)
            out["moves"] += rep != last
            out["sids"].add(hd.get("X-Session-ID"))
        last = rep
        prompt += j["choices"][0]["text"] + " User: " + words(250, 1000 * i + t)
        await asyncio.sleep(0.05)


async def one(tree, base):
    h.TREE = tree
    sp, reps = sims(base, 2, profile="llama3-8b-h100", blocks=BLOCKS, scale=1.0)
    pp, url = proxy(base + 10, reps)
    out = {"cached": 0, "prompt": 0, "lat": [], "moves": 0, "fail": 0, "sids": set()}
    async with aiohttp.ClientSession() as s:
        await wait_kv(s, url, 2)
        t0 = time.time()
        await asyncio.gather(*(conv(s, url, i, out) for i in range(NCONV)))
        wall = time.time() - t0
        st = await get(s, url, "/saga/v1/state")
    kill(pp)
    kill(sp)
    hit = out["cached"] / max(1, out["prompt"])
    lat = sorted(out["lat"])
    p50 = lat[len(lat) // 2] if lat else float("nan")
    return hit, out["moves"], len(lat), len(out["sids"]), p50, wall, out["fail"], st.get("shared_cache_keys")


async def run():
    b = await one("/tmp/snap49", 24200)
    a = await one(TARGET, 24220)
    fmt = lambda r: (
        f"prefix hit {r[0]:.2f}, replica changes {r[1]}/{r[2]} calls, session ids {r[3]}, "
        f"p50 {r[4] * 1000:.0f} ms, wall {r[5]:.1f} s, failed {r[6]}, shared_cache_keys {r[7]}"
    )
    line = f"before(4cd78d9): {fmt(b)} | now: {fmt(a)}"
    if a[0] < b[0] - 0.15 and a[1] > b[1] + 5:
        return (
            "DEFECT: /v1/completions conversations with a per-conversation prompt_cache_key lose affinity for good after one concurrent duplicate call: "
            + line
        )
    return "OK: " + line


main(run)
