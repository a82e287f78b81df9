"""Impact of ended sessions keeping their retention: 6 sessions ended with X-Session-End (at a state where the
graph expects the task to go on) leave ~149 of 300 KV blocks retained at their workflows' priorities; a newer
workflow's call (priority 1000, as newer workflows rank) needing most of the KV then waits until those TTLs
run out, while a long call runs beside it. Prints DEFECT when the call waits seconds longer than the same
call after the TTLs."""

import asyncio
import sys
import time

from common import agent_call, aiohttp, lib, long_direct, next_msgs, run_with_proxy

SIM, PORT = 19511, 19510
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]
GAP = 6.0
BLOCKS = int(sys.argv[1]) if len(sys.argv) > 1 else 300


def retained():
    d = lib.get(f"{R[0]}/saga/v1/retained")[1]
    return d["num_blocks"], len(d["sessions"])


async def session(s, i, calls, words=200):
    sid = f"w-{i}"
    msgs = [
        {"role": "system", "content": "You are a coder."},
        {"role": "user", "content": lib.prompt(words, f"w{i}_")},
    ]
    for k in range(calls):
        last = k == calls - 1
        r = await agent_call(s, B, sid, msgs, end=last)
        msgs = next_msgs(msgs, r[2])
        if not last:
            await asyncio.sleep(GAP)


async def probe(s, tag):
    # a newer workflow's call (priority 1000) needing most of the KV, while a long call runs
    t0 = time.time()
    st, _ = await long_direct(s, R[0], 2300, tag, max_tokens=1, priority=1000)
    return st, round(time.time() - t0, 2)


async def main():
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(session(s, f"train{i}", 4) for i in range(10)))
        await asyncio.sleep(GAP + 2)
        print("after training, retained:", retained())
        await asyncio.gather(*(session(s, f"e{i}", 3, words=400) for i in range(6)))
        print("right after 6 sessions ended, retained (blocks, sessions):", retained())
        runner = asyncio.create_task(long_direct(s, R[0], 50, "run", max_tokens=3000, priority=1000))
        await asyncio.sleep(0.3)
        a = await probe(s, "p1_")
        print("probe while ended sessions' KV is retained:", a, "retained now", retained())
        await asyncio.sleep(GAP + 2)
        b = await probe(s, "p2_")
        print("probe after the TTLs:", b, "retained now", retained())
        runner.cancel()
        if a[1] > b[1] + 2:
            print(
                f"DEFECT: a newer workflow's call took {a[1]} s while ended sessions' KV stayed retained, "
                f"{b[1]} s after"
            )
        else:
            print("ok")


run_with_proxy(main, SIM, 1, BLOCKS, PORT)
