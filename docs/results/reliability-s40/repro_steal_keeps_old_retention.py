"""Work stealing moves a bound workflow's call to an idle replica (`moves` in /saga/v1/state), but the
retention the workflow's previous call set on its old replica is never released: the old (congested) replica
keeps the session's KV retained until its TTL, at the workflow's own priority (a hard hold under the saga
preset), while the session now lives on the new replica (retained there too). Prints DEFECT while the old
replica still holds the moved session's retention after the move."""

import asyncio
import re
import urllib.request

from common import agent_call, aiohttp, lib, long_direct, next_msgs, run_with_proxy

SIM, PORT = 19441, 19440
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}", f"http://127.0.0.1:{SIM + 1}"]
GAP = 8.0


def retained(url):
    d = lib.get(f"{url}/saga/v1/retained")[1]
    return {x["session_id"]: (round(x["expires_at"] - d["now"], 2), x["num_blocks"]) for x in d["sessions"]}


def releases_sent():
    m = urllib.request.urlopen(f"{B}/metrics", timeout=5).read().decode()
    got = re.search(r"^saga_retention_releases_sent(?:_total)? (\S+)", m, re.M)
    return float(got.group(1)) if got else 0.0


async def train(s, i):
    sid = f"train-{i}"
    msgs = [
        {"role": "system", "content": "You are a coder."},
        {"role": "user", "content": lib.prompt(60, f"t{i}_")},
    ]
    for k in range(4):
        r = await agent_call(s, B, sid, msgs, end=(k == 3))
        msgs = next_msgs(msgs, r[2])
        if k < 3:
            await asyncio.sleep(GAP)


async def main():
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(train(s, i) for i in range(10)))
        await asyncio.sleep(GAP + 1)  # training retentions expired
        sid = "victim"
        msgs = [
            {"role": "system", "content": "You are a coder."},
            {"role": "user", "content": lib.prompt(300, "v")},
        ]
        r = await agent_call(s, B, sid, msgs)
        old = r[3].get("X-Saga-Replica")
        msgs = next_msgs(msgs, r[2])
        await asyncio.sleep(0.2)
        print("call 1 on", old, "| retained there:", retained(old).get(sid))
        # a backlog on the victim's replica: 300 short calls of newer work (priority 1000, as newer
        # workflows' calls
        # rank), sent to it directly: past max_num_seqs (256) they queue in its engine with KV to spare
        ds = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        direct = [
            asyncio.create_task(long_direct(ds, old, 20, f"d{j}_", max_tokens=400, priority=1000))
            for j in range(300)
        ]
        for _ in range(50):
            await asyncio.sleep(0.1)
            if any(x["waiting"] for x in lib.state(B)["replicas"] if x["replica_id"] == old):
                break
        print(
            "replicas (url, waiting, running):",
            [(x["replica_id"][-5:], x["waiting"], x["running"]) for x in lib.state(B)["replicas"]],
        )
        moves0, sent0 = lib.state(B)["moves"], releases_sent()
        r = await agent_call(s, B, sid, msgs)
        new = r[3].get("X-Saga-Replica")
        await asyncio.sleep(0.3)
        moves, sent = lib.state(B)["moves"] - moves0, releases_sent() - sent0
        on_old, on_new = retained(old).get(sid), retained(new).get(sid)
        for t in direct:
            t.cancel()
        await asyncio.gather(*direct, return_exceptions=True)
        await ds.close()
    print(f"call 2 on {new} (moves +{moves}); releases sent: {sent:g}")
    print("retention of the moved session: old replica", on_old, "| new replica", on_new)
    if new != old and on_old is not None:
        print(
            f"DEFECT: the session moved to {new}, yet {old} (the congested replica) keeps its "
            f"{on_old[1]} blocks retained for {on_old[0]} s more; no release was sent"
        )
    elif new == old:
        print("inconclusive: no move happened")
    else:
        print("ok")


run_with_proxy(main, SIM, 2, 8000, PORT)
