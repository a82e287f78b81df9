# ruff: noqa
"""d06: agents without session ids mixing client timeouts, cancelled streams and parallel calls: look for a call
the proxy keeps in flight at a replica that has nothing running (the client waits until its own timeout)."""

import asyncio, json, os, sys, time, random

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aiohttp
from harness import start_sims, start_proxy, stop_all, wait_ready, get, chat, words, TOOLS

AGENTS, ROUNDS, HANG_S = 30, 30, 15.0


async def one(s, url, a, st):
    rnd = random.Random(a)
    h = None
    system = {"role": "system", "content": "You are a coding agent. " + words(200, 7)}
    msgs = [system, {"role": "user", "content": f"Task {a}: " + words(40, 1000 + a)}]
    for i in range(ROUNDS):
        k = rnd.random()
        try:
            if k < 0.15:
                try:
                    await chat(
                        s, url, msgs, headers=h, max_tokens=800, timeout=0.3, extra={"ignore_eos": True}
                    )
                except asyncio.TimeoutError:
                    st["timeouts"] += 1
            elif k < 0.3:
                body = {
                    "model": "saga-sim",
                    "messages": msgs,
                    "max_tokens": 800,
                    "stream": True,
                    "ignore_eos": True,
                }
                resp = await s.post(url + "/v1/chat/completions", json=body)
                n = 0
                async for line in resp.content:
                    n += 1
                    if n > 20:
                        break
                resp.close()
                st["cancels"] += 1
            if k < 0.5:
                t = time.time()
                rs = await asyncio.gather(
                    *[
                        chat(
                            s,
                            url,
                            msgs + [{"role": "user", "content": f"sub {i}-{j} " + words(20, j)}],
                            max_tokens=40,
                            timeout=HANG_S,
                        )
                        for j in range(4)
                    ],
                    return_exceptions=True,
                )
                for r in rs:
                    if isinstance(r, asyncio.TimeoutError):
                        st["hung"] += 1
                        st["hung_at"].append(round(time.time() - st["t0"], 1))
                    elif isinstance(r, Exception):
                        st["exc"] += 1
                st["parallel"] += 4
            code, txt, dt, hd = await chat(
                s,
                url,
                msgs,
                max_tokens=16,
                extra={"tools": TOOLS, "vllm_xargs": {"saga_sim_tool_turns": 1000}},
                timeout=HANG_S,
            )
        except asyncio.TimeoutError:
            st["hung"] += 1
            st["hung_at"].append(round(time.time() - st["t0"], 1))
            continue
        st["calls"] += 1
        if code != 200:
            msgs = [system, {"role": "user", "content": f"Summary {a}/{i}: " + words(80, a * 100 + i)}]
            continue
        m = json.loads(txt)["choices"][0]["message"]
        msgs.append({"role": "assistant", "content": m.get("content"), "tool_calls": m["tool_calls"]})
        msgs.append(
            {"role": "tool", "tool_call_id": m["tool_calls"][0]["id"], "content": words(60, a * 1000 + i)}
        )


async def run(policy, base):
    reps = start_sims(base, 2)
    url = start_proxy(base + 10, reps, policy)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as s:
            await wait_ready(s, url)
            st = dict(calls=0, timeouts=0, cancels=0, parallel=0, hung=0, exc=0, hung_at=[], t0=time.time())
            stuck = []
            done = False

            async def mon():
                while not done:
                    q = await get(s, url, "/saga/v1/queue")
                    for c in q["calls"]:
                        if c["age_s"] > 5 and c["request_id"] not in [x["request_id"] for x in stuck]:
                            reps_run = 0.0
                            async with s.get(c["replica_id"] + "/metrics") as r:
                                for l in (await r.text()).splitlines():
                                    if l.startswith("vllm:num_requests_running") or l.startswith(
                                        "vllm:num_requests_waiting"
                                    ):
                                        reps_run += float(l.split()[-1])
                            if reps_run == 0:
                                stuck.append(dict(c, replica_running=reps_run))
                    await asyncio.sleep(1)

            m = asyncio.create_task(mon())
            await asyncio.gather(*[one(s, url, a, st) for a in range(AGENTS)])
            done = True
            await m
            return st, stuck
    finally:
        stop_all()


async def main():
    st, stuck = await run(os.environ.get("POLICY", "saga"), 23180)
    st.pop("t0")
    print(f"stats {st}")
    for c in stuck[:5]:
        print("stuck", c)
    if stuck:
        print(
            f"DEFECT: {st['hung']} call(s) got no answer within {HANG_S:.0f}s (at t={st['hung_at']}s) among {st['calls'] + st['parallel']} calls; the proxy listed {len(stuck)} call(s) in flight over 5 s at a replica with nothing running or waiting, e.g. {stuck[0] if stuck else None}"
        )
    else:
        print(
            f"OK: ({st['hung']} calls over {HANG_S:.0f}s, none while its replica was idle) no call hung among {st['calls'] + st['parallel']} calls ({st['timeouts']} client timeouts, {st['cancels']} cancelled streams, {st['parallel']} parallel calls)"
        )


try:
    asyncio.run(main())
finally:
    stop_all()
