"""`queue.min_active_tenants: 2` (the queue holds calls only while two or more tenants compete) with
`--workers 2`: each worker counts only the tenants of the sessions it owns. Two tenants whose sessions
belong to different workers compete for one replica, yet neither worker sees two tenants, so nothing is
held: the gate (one call in flight) is ignored and every call goes straight to the replica, with no fair
order between the tenants. One process holds them (at most one in flight). Prints DEFECT while present."""

import asyncio
import os

import aiohttp
import lib

PORT, SIM = 19670, 19671
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]
TENANT_SESSIONS = {"alpha": ["f0", "f6", "f13"], "beta": ["f1", "f2", "f3"]}  # owned by worker 0 / worker 1


async def main():
    async with aiohttp.ClientSession() as s:
        for tenant, sids in TENANT_SESSIONS.items():  # each tenant active once
            await lib.chat(s, B, "warm", sid=sids[0], headers={"X-Tenant-ID": tenant})
        calls = [
            asyncio.create_task(
                lib.chat(s, B, f"hello {sid}", sid=sid, headers={"X-Tenant-ID": t}, max_tokens=300)
            )
            for t, sids in TENANT_SESSIONS.items()
            for sid in sids
        ]
        peak_in_flight, peak_queued = 0, 0
        while not all(t.done() for t in calls):
            st = lib.state(B)
            peak_in_flight = max(peak_in_flight, st["in_flight"])
            peak_queued = max(peak_queued, st["queued"])
            await asyncio.sleep(0.05)
        return peak_in_flight, peak_queued, [t.result()[0] for t in calls]


def once(workers):
    sims = lib.start_sims(SIM, 1, 20000)
    proxy = lib.start_proxy(
        PORT,
        R,
        config=os.path.join(os.path.dirname(os.path.abspath(__file__)), "saga_queue_min2.yaml"),
        extra=["--workers", str(workers)],
    )
    try:
        peak, queued, statuses = asyncio.run(main())
        print(f"workers={workers}: peak in flight {peak} (gate: 1), peak held {queued}, statuses {statuses}")
        return peak
    finally:
        lib.stop(proxy)
        lib.stop(sims)


if __name__ == "__main__":
    once(1)
    peak = once(2)
    print(
        f"DEFECT: with 2 workers {peak} calls ran at once past a gate of 1: the queue never turned on"
        if peak > 2
        else "ok"
    )
