"""A session the client ends (X-Session-End: true on its last call, or POST /saga/v1/sessions/{id}/end) keeps
its KV retained on its replica until the retention's TTL: the proxy never sends POST /saga/v1/release for it,
and under the `saga` preset the retention ranks with its workflow (a hard hold that newer workflows' calls
cannot break). Prints DEFECT while ended sessions' retentions are still held on the replica after the end."""

import asyncio
import re

from common import agent_call, aiohttp, lib, next_msgs, run_with_proxy

SIM, PORT = 19431, 19430
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]
GAP = 3.0


def retained():
    d = lib.get(f"{R[0]}/saga/v1/retained")[1]
    return {x["session_id"]: (round(x["expires_at"] - d["now"], 2), x["num_blocks"]) for x in d["sessions"]}


def releases_sent():
    import urllib.request

    m = urllib.request.urlopen(f"{B}/metrics", timeout=5).read().decode()
    got = re.search(r"^saga_retention_releases_sent(?:_total)? (\S+)", m, re.M)
    return float(got.group(1)) if got else None


async def session(s, i, calls, end_by):
    sid = f"w-{i}"
    msgs = [
        {"role": "system", "content": "You are a coder."},
        {"role": "user", "content": lib.prompt(200, f"w{i}_")},
    ]
    for k in range(calls):
        last = k == calls - 1
        r = await agent_call(s, B, sid, msgs, end=(last and end_by == "header"))
        assert r[0] == 200, r
        msgs = next_msgs(msgs, r[2])
        if not last:
            await asyncio.sleep(GAP)
    if end_by == "admin":
        st, _ = lib.post(f"{B}/saga/v1/sessions/{sid}/end")
        assert st == 200, st
    return sid


async def main():
    async with aiohttp.ClientSession() as s:
        # teach the agent type its tool gaps (retention needs 8 departures of the state)
        await asyncio.gather(*(session(s, f"train{i}", 4, "header") for i in range(10)))
        await asyncio.sleep(GAP + 1)  # every training retention has expired by now
        sent0 = releases_sent()
        ended = await asyncio.gather(
            *(session(s, f"h{i}", 3, "header") for i in range(3)),
            *(session(s, f"a{i}", 3, "admin") for i in range(3)),
        )
        await asyncio.sleep(0.3)
        listed = {x["session_id"] for x in lib.get(f"{B}/saga/v1/sessions")[1]["sessions"]}
        held = {sid: v for sid, v in retained().items() if sid in ended}
        sent = releases_sent() - sent0
    print("ended sessions still listed by the proxy:", sorted(listed & set(ended)))
    print("ended sessions' retentions on the replica (TTL left s, blocks):", held)
    print("retention releases the proxy sent meanwhile:", sent)
    if held:
        print(
            f"DEFECT: {len(held)} of {len(ended)} ended sessions keep "
            f"{sum(b for _, b in held.values())} KV blocks "
            f"retained for up to {max(t for t, _ in held.values())} s more; the proxy sent {sent:g} releases"
        )
    else:
        print("ok")


run_with_proxy(main, SIM, 1, 2000, PORT)
