"""With client API keys each tenant's agent types are its own graphs (`alpha:coder`), but all tenants share
one LRU of `max_agent_types` (64) graphs per predictor: another tenant naming 64 agent types, two one-call
sessions each (128 calls, < 1 s), evicts every other tenant's learned graph. The victim's next workflow is
predicted from the priors again: no KV retention between its tool calls (TTL None), and it must re-learn
from scratch. Prints DEFECT while a tenant's graph can be evicted by another tenant's traffic."""

import asyncio
import json
import os
import time
import urllib.request

from common import agent_call, aiohttp, lib, next_msgs

SIM, PORT = 19421, 19420
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]
ADM = {"Authorization": "Bearer adm"}


def aget(path):
    req = urllib.request.Request(B + path, headers=ADM)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


async def train(s, i, key="sk-alpha", agent="coder", calls=4, gap=1.0, tag="t"):
    sid = f"{tag}-{i}"
    msgs = [
        {"role": "system", "content": "You are a coder."},
        {"role": "user", "content": lib.prompt(60, f"{tag}{i}_")},
    ]
    for k in range(calls):
        r = await agent_call(
            s, B, sid, msgs, agent=agent, end=(k == calls - 1), extra={"Authorization": f"Bearer {key}"}
        )
        msgs = next_msgs(msgs, r[2])
        if k < calls - 1:
            await asyncio.sleep(gap)
    return r[0]


def retained():
    d = lib.get(f"{R[0]}/saga/v1/retained")[1]
    return {x["session_id"]: round(x["expires_at"] - d["now"], 1) for x in d["sessions"]}


async def victim_probe(s, n):
    sid = f"probe-{n}"
    msgs = [
        {"role": "system", "content": "You are a coder."},
        {"role": "user", "content": lib.prompt(60, f"p{n}_")},
    ]
    r = await agent_call(s, B, sid, msgs, extra={"Authorization": "Bearer sk-alpha"})
    msgs = next_msgs(msgs, r[2])
    r = await agent_call(
        s, B, sid, msgs, extra={"Authorization": "Bearer sk-alpha"}
    )  # dispatched in state read_file#1
    await asyncio.sleep(0.2)
    return retained().get(f"alpha:{sid}")


async def main():
    async with aiohttp.ClientSession() as s:
        print("train:", await asyncio.gather(*(train(s, i) for i in range(10))))
        g = aget("/saga/v1/graphs")
        print("graphs before:", len(g["agent_types"]), [t for t in g["agent_types"] if t.startswith("alpha")])
        before = await victim_probe(s, 1)
        print("victim's retention TTL before:", before)
        t0 = time.time()
        # mallory: 64 agent types, two one-call sessions each (the doorkeeper's second session earns a graph)
        n = 0
        for rnd in range(2):
            rs = await asyncio.gather(
                *(
                    train(s, f"{j}-{rnd}", key="sk-mallory", agent=f"m{j}", calls=1, tag="m")
                    for j in range(64)
                )
            )
            n += len(rs)
        print(f"mallory sent {n} calls in {time.time() - t0:.1f} s:", {x: rs.count(x) for x in set(rs)})
        g = aget("/saga/v1/graphs")
        alpha = [t for t in g["agent_types"] if t.startswith("alpha")]
        print("graphs after:", len(g["agent_types"]), "alpha's:", alpha)
        after = await victim_probe(s, 2)
        print("victim's retention TTL after:", after)
        return before, after, alpha


sims = lib.start_sims(SIM, 1, 2000)
KEYS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keys.yaml")
proxy = lib.start_proxy(PORT, R, ["--health-interval-s", "0.2"], config=KEYS)
try:
    before, after, alpha = asyncio.run(main())
    if not alpha:
        print(
            f"DEFECT: tenant mallory's 128 calls evicted tenant alpha's learned graph 'alpha:coder'; "
            f"alpha's next workflow's retention TTL went from {before} s to {after} (cold priors)"
        )
    else:
        print("ok")
finally:
    lib.stop(proxy)
    lib.stop(sims)
