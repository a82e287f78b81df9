# ruff: noqa
"""Task times under KV pressure (2 sim replicas llama3-8b-h100, 600 blocks each, real time).
Scenarios (argv[3]):
  stagger : 12 agents share ONE prompt_cache_key ("user-1"), agent i starts at i*1.0 s, 8 calls each.
  subagents: 4 workflows, each ONE key of its own; parent makes 2 calls, then 3 subagents (own first user
             message, same key) run 4 calls each in parallel, then parent 2 more calls. Task = workflow.
Usage: t4_perf.py TREE PORT SCENARIO POLICY"""

import asyncio, sys, time, random, statistics, aiohttp

sys.path.insert(0, "/tmp/reviewK")
from harness import stack, get


async def run_conv(http, url, key, first, turns, out, start_delay=0.0):
    await asyncio.sleep(start_delay)
    msgs = [
        {"role": "system", "content": "You are a coding agent. " * 40},
        {"role": "user", "content": first},
    ]
    t0 = time.monotonic()
    for turn in range(turns):
        body = {"model": "saga-sim", "max_tokens": 150, "messages": msgs, "prompt_cache_key": key}
        async with http.post(
            url + "/v1/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=300)
        ) as r:
            j = await r.json()
            if r.status != 200:
                out["failed"] += 1
                return None
        out["calls"] += 1
        msgs = msgs + [
            j["choices"][0]["message"],
            {"role": "user", "content": f"tool result {turn}: " + "line " * 400},
        ]
        await asyncio.sleep(0.3)
    return time.monotonic() - t0


async def stagger(http, url, out):
    rs = await asyncio.gather(
        *(
            run_conv(
                http,
                url,
                "user-1",
                f"task {i}: " + "context " * random.Random(i).randint(1000, 1200),
                8,
                out,
                i * 1.0,
            )
            for i in range(12)
        )
    )
    return [r for r in rs if r is not None]


async def workflow(http, url, w, out):
    t0 = time.monotonic()
    key = f"wf-{w}"
    main = f"workflow {w}: " + "context " * 900
    await run_conv(http, url, key, main, 2, out)
    await asyncio.gather(
        *(run_conv(http, url, key, f"subagent {s} of wf {w}: " + "sub " * 700, 4, out) for s in range(3))
    )
    await run_conv(http, url, key, main, 2, out)
    return time.monotonic() - t0


async def subagents(http, url, out):
    return await asyncio.gather(*(workflow(http, url, w, out) for w in range(4)))


async def main(url, scen):
    out = {"calls": 0, "failed": 0}
    async with aiohttp.ClientSession() as http:
        tct = await (stagger if scen == "stagger" else subagents)(http, url, out)
    st = get(url + "/saga/v1/state")
    print(
        f"tasks {len(tct)} mean {statistics.mean(tct):.1f} s max {max(tct):.1f} s calls {out['calls']} failed {out['failed']} cache_keys {st.get('cache_keys')}"
    )


tree, port, scen, policy = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with stack(
    tree,
    port - 10,
    port,
    policy=policy,
    sim_args=("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--model", "saga-sim"),
) as url:
    print(f"{tree} {policy} {scen}: ", end="")
    asyncio.run(main(url, scen))
