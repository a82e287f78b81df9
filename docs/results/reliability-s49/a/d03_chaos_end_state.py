# ruff: noqa
"""d03: 30 agents on 2 small replicas doing what real agents do (compaction, context overflow 400s, client
timeouts with retries, streams cancelled mid-way, parallel calls, a 300 KB tool result): afterwards the proxy's
state, sessions and metrics must show nothing in flight and, once holds run out, nothing reserved."""

import asyncio, json, os, sys, time, random

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aiohttp
from harness import start_sims, start_proxy, stop_all, wait_ready, agent, get, chat, words, TOOLS


async def chaotic(s, url, a, stats):
    rnd = random.Random(a)
    h = {"X-Session-ID": f"agent-{a}"} if a % 2 else None
    system = {"role": "system", "content": "You are a coding agent. " + words(200, 7)}
    msgs = [system, {"role": "user", "content": f"Task {a}: " + words(40, 1000 + a)}]
    for i in range(40):
        kind = rnd.random()
        extra = {"tools": TOOLS, "vllm_xargs": {"saga_sim_tool_turns": 1000}}
        try:
            if kind < 0.08:  # client timeout on a long call, then retry
                try:
                    await chat(
                        s, url, msgs, headers=h, max_tokens=800, timeout=0.3, extra={"ignore_eos": True}
                    )
                except asyncio.TimeoutError:
                    stats["timeouts"] += 1
            elif kind < 0.16:  # stream cancelled mid-way
                body = {
                    "model": "saga-sim",
                    "messages": msgs,
                    "max_tokens": 800,
                    "stream": True,
                    "ignore_eos": True,
                }
                resp = await s.post(url + "/v1/chat/completions", json=body, headers=h or {})
                n = 0
                async for line in resp.content:
                    n += 1
                    if n > 20:
                        break
                resp.close()
                stats["cancels"] += 1
            elif kind < 0.22:  # parallel calls
                rs = await asyncio.gather(
                    *[
                        chat(
                            s,
                            url,
                            msgs + [{"role": "user", "content": f"sub {k} " + words(20, k)}],
                            headers=h,
                            max_tokens=40,
                        )
                        for k in range(4)
                    ]
                )
                stats["parallel"] += 4
            st, txt, dt, hd = await chat(s, url, msgs, headers=h, max_tokens=16, extra=extra, timeout=200)
        except Exception as e:
            stats["exc"] += 1
            continue
        stats["calls"] += 1
        if st == 400:
            stats["400"] += 1
            msgs = [system, {"role": "user", "content": f"Summary {a}/{i}: " + words(80, a * 100 + i)}]
            continue
        if st != 200:
            stats["other"] += 1
            continue
        m = json.loads(txt)["choices"][0]["message"]
        msgs.append({"role": "assistant", "content": m.get("content"), "tool_calls": m["tool_calls"]})
        big = rnd.random() < 0.03
        msgs.append(
            {
                "role": "tool",
                "tool_call_id": m["tool_calls"][0]["id"],
                "content": words(40000 if big else 120, a * 1000 + i),
            }
        )
        if big:
            stats["big"] += 1
        if i % 15 == 14 and rnd.random() < 0.5:
            msgs = [system, {"role": "user", "content": f"Compacted {a}/{i}: " + words(80, a * 7 + i)}]


async def main():
    reps = start_sims(23480, 2)
    url = start_proxy(23490, reps, "saga")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as s:
        await wait_ready(s, url)
        stats = dict(calls=0, timeouts=0, cancels=0, parallel=0, exc=0, other=0, big=0, **{"400": 0})
        t0 = time.time()
        await asyncio.gather(*[chaotic(s, url, a, stats) for a in range(30)])
        run_s = time.time() - t0
        await asyncio.sleep(1.0)

        def take(st, ses, met, sims):
            sess_if = sum(x["in_flight"] for x in ses["sessions"])
            gauge = [l for l in met.splitlines() if l.startswith("saga_in_flight ")]
            repl = sum(
                float(l.split()[-1]) for l in met.splitlines() if l.startswith("saga_replica_in_flight{")
            )
            return dict(
                state_in_flight=st["in_flight"],
                queued=st["queued"],
                waiting=st["admission"]["waiting"],
                reserved=sum(st["admission"]["reserved_tokens"].values()),
                live=st["admission"]["live"],
                replica_in_flight=sum(r["in_flight"] for r in st["replicas"]),
                sessions_in_flight=sess_if,
                metric_in_flight=float(gauge[0].split()[-1]) if gauge else None,
                metric_replica_in_flight=repl,
                engine_running=sims,
            )

        async def snap():
            st = await get(s, url, "/saga/v1/state")
            ses = await get(s, url, "/saga/v1/sessions?limit=1000")
            async with s.get(url + "/metrics") as r:
                met = await r.text()
            sims = 0.0
            for rep in reps:
                async with s.get(rep + "/metrics") as r:
                    for l in (await r.text()).splitlines():
                        if l.startswith("vllm:num_requests_running") or l.startswith(
                            "vllm:num_requests_waiting"
                        ):
                            sims += float(l.split()[-1])
            return take(st, ses, met, sims)

        a = await snap()
        await asyncio.sleep(15)
        b = await snap()
    print(f"run {run_s:.1f}s stats {stats}")
    print(f"1 s after: {a}")
    print(f"16 s after: {b}")
    leaks = [
        k
        for k in (
            "state_in_flight",
            "queued",
            "waiting",
            "replica_in_flight",
            "sessions_in_flight",
            "metric_in_flight",
            "metric_replica_in_flight",
            "engine_running",
        )
        if a[k]
    ]
    if leaks or b["reserved"] or b["live"]:
        print(
            f"DEFECT: after all 30 agents ended: leaked {[(k, a[k]) for k in leaks]}; 16 s later reserved {b['reserved']} tokens, live {b['live']}"
        )
    else:
        print(
            f"OK: nothing in flight, queued or waiting after {stats['calls']} calls ({stats['timeouts']} client timeouts, {stats['cancels']} cancelled streams, {stats['400']} context 400s, {stats['parallel']} parallel calls, {stats['big']} ~300 KB tool results); reservations 1 s after {a['reserved']} tokens, 16 s after {b['reserved']}"
        )


try:
    asyncio.run(main())
finally:
    stop_all()
