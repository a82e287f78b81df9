# ruff: noqa
"""d02: an agent that fans out parallel calls in its session (Claude Code subagents / parallel tool calls, one
session id) on 2 replicas: saga keeps every call on the session's replica while the other replica sits idle."""

import asyncio, json, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aiohttp
from harness import start_sims, start_proxy, stop_all, wait_ready, agent, get, chat, words

ROUNDS, FAN = 5, 8


async def run(pol, base):
    reps = start_sims(base, 2)
    url = start_proxy(base + 10, reps, pol)
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url)
            h = {"X-Session-ID": "fanout-agent"}
            await agent(s, url, 1, 3, headers=h)
            system = {"role": "system", "content": "You are a coding agent. " + words(200, 7)}
            msgs = [system, {"role": "user", "content": "Task 1: " + words(40, 1001)}]
            times, used = [], set()
            for rnd in range(ROUNDS):
                t = time.time()
                rs = await asyncio.gather(
                    *[
                        chat(
                            s,
                            url,
                            msgs
                            + [
                                {
                                    "role": "user",
                                    "content": f"explore part {rnd}-{k} " + words(30, rnd * 100 + k),
                                }
                            ],
                            headers=h,
                            max_tokens=500,
                            extra={"ignore_eos": True},
                        )
                        for k in range(FAN)
                    ]
                )
                times.append(time.time() - t)
                assert all(r[0] == 200 for r in rs), [r[0] for r in rs]
                used |= {r[3].get("X-Saga-Replica") for r in rs}
                await asyncio.sleep(0.3)
            st = await get(s, url, "/saga/v1/state")
            return sorted(times)[len(times) // 2], len(used), st.get("moves"), st["in_flight"]
    finally:
        stop_all()


async def main():
    sg = await run("saga", 23450)
    rr = await run("round-robin", 23470)
    print(
        f"saga: fan-out of {FAN} x 500 tokens, median of {ROUNDS} rounds {sg[0]:.2f}s on {sg[1]} replica(s), moves {sg[2]}, in_flight after {sg[3]}"
    )
    print(f"round-robin: {rr[0]:.2f}s on {rr[1]} replica(s), in_flight after {rr[3]}")
    if sg[0] > 1.2 * rr[0] and sg[1] == 1:
        print(
            f"DEFECT: {FAN} parallel calls of one session all went to 1 replica while the other was idle: fan-out {sg[0]:.2f}s vs {rr[0]:.2f}s under round-robin ({sg[0] / rr[0]:.2f}x slower), work stealing moves {sg[2]}"
        )
    else:
        print(f"OK: saga {sg[0]:.2f}s on {sg[1]} replicas vs round-robin {rr[0]:.2f}s")


try:
    asyncio.run(main())
finally:
    stop_all()
