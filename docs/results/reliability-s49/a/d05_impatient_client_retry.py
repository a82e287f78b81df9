# ruff: noqa
"""d05: a new agent whose client times out (as SDKs do) and retries while the fleet is busy: each retry is a new
arrival at the back of saga's admission queue, so with new agents arriving steadily it may never be served."""

import asyncio, json, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aiohttp
from harness import start_sims, start_proxy, stop_all, wait_ready, agent, get, chat, words

ACTIVE, CALLS, RUN_S, CLIENT_TIMEOUT = 24, 40, 60.0, 3.0


async def run(policy, base):
    reps = start_sims(base, 2)
    url = start_proxy(base + 10, reps, policy)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as s:
            await wait_ready(s, url)
            t0 = time.time()
            stop = False
            counter = [100]
            served_agents = [0]

            async def slot():
                while not stop:
                    counter[0] += 1
                    await agent(
                        s, url, counter[0], CALLS, headers={"X-Session-ID": f"bg-{counter[0]}"}, timeout=300
                    )
                    served_agents[0] += 1

            slots = [asyncio.create_task(slot()) for _ in range(ACTIVE)]
            await asyncio.sleep(3.0)
            # the impatient agent: its first call, retried after each client timeout, same session id
            system = {"role": "system", "content": "You are a coding agent. " + words(200, 7)}
            msgs = [system, {"role": "user", "content": "Impatient task: " + words(40, 4242)}]
            tries = 0
            t1 = time.time()
            ok_at = None
            while time.time() - t1 < RUN_S - 5:
                tries += 1
                try:
                    st, txt, dt, h = await chat(
                        s,
                        url,
                        msgs,
                        headers={"X-Session-ID": "impatient"},
                        max_tokens=16,
                        timeout=CLIENT_TIMEOUT,
                    )
                    if st == 200:
                        ok_at = time.time() - t1
                        break
                except asyncio.TimeoutError:
                    pass
            stop = True
            q = await get(s, url, "/saga/v1/queue")
            for t in slots:
                t.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            return ok_at, tries, q["admission_waiting"], served_agents[0]
    finally:
        stop_all()


async def main():
    sg = await run("saga", 23140)
    rr = await run("round-robin", 23160)
    f = lambda r: "never served" if r[0] is None else f"served after {r[0]:.1f}s"
    print(
        f"saga: impatient client ({CLIENT_TIMEOUT:.0f}s timeout, retries): {f(sg)} in {sg[1]} tries; admission waiting at the end {sg[2]}; background agents done {sg[3]}"
    )
    print(f"round-robin: {f(rr)} in {rr[1]} tries; background agents done {rr[3]}")
    if sg[0] is None:
        print(
            f"DEFECT: a client with a {CLIENT_TIMEOUT:.0f}s timeout retrying its first call under saga: {f(sg)} ({sg[1]} tries over {RUN_S - 5:.0f}s) while {ACTIVE} other agents kept the fleet busy; round-robin: {f(rr)} ({rr[1]} tries)"
        )
    else:
        print(
            f"OK: the retrying client was not starved: saga {f(sg)} in {sg[1]} tries (admission wait, documented), round-robin {f(rr)}"
        )


try:
    asyncio.run(main())
finally:
    stop_all()
