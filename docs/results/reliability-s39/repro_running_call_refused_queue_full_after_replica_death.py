"""Release queue with a bound (`max_queued: 5`), two replicas: a call already released and running on
replica A when A dies is routed again through the queue; the queue is full of calls that arrived after
it, so the proxy answers it 429 `queue_full` ("the proxy's queue is full"), a rate-limit refusal for a
call it had accepted and started, while the later calls it holds are served. Prints DEFECT while
present."""

import asyncio
import os

import aiohttp
import lib

PORT, A, B_ = 19620, 19621, 19622
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{A}", f"http://127.0.0.1:{B_}"]


async def main(sim_a):
    async with aiohttp.ClientSession() as s:
        running = [
            asyncio.create_task(lib.chat(s, B, "hello", sid=f"run{i}", max_tokens=1000)) for i in range(2)
        ]
        await asyncio.sleep(0.5)  # one on each replica (the gate: one call each)
        later = [
            asyncio.create_task(lib.chat(s, B, f"hi {i}", sid=f"later{i}", max_tokens=10)) for i in range(5)
        ]
        await asyncio.sleep(0.7)
        print("held:", lib.state(B)["queued"], "in flight:", lib.state(B)["in_flight"])
        lib.stop(sim_a)  # replica A dies under its running call
        got = [await t for t in running]
        for i, (st, _dt, text, _) in enumerate(got):
            print(f"run{i} (running when A died): {st} {text[:110] if st != 200 else ''}")
        print("later calls:", [(await t)[0] for t in later])
        await asyncio.sleep(1)
        print("after:", lib.summary(B))
        return [st for st, *_ in got]


sim_a, sim_b = lib.start_sims(A, 1, 2000), lib.start_sims(B_, 1, 2000)
proxy = lib.start_proxy(
    PORT, R, config=os.path.join(os.path.dirname(os.path.abspath(__file__)), "saga_queue_bound5.yaml")
)
try:
    statuses = asyncio.run(main(sim_a))
    print(
        "DEFECT: a call running when its replica died was refused 429 queue_full" if 429 in statuses else "ok"
    )
finally:
    lib.stop(proxy)
    lib.stop(sim_a)
    lib.stop(sim_b)
