"""`--workers 2` with the release queue: two tenants, both backlogged at one replica's gate, equal weights.
The batch tenant's sessions belong to both workers (4 each); the steady tenant's 4 sessions all belong to
worker 1. The workers take turns at the gate, and each releases its own calls in its tenants' fair order;
if that order counts only what the worker itself released, worker 1 splits its half of the gate between
the two tenants and the steady tenant gets a quarter of the calls served, not its half (one process: about
half). Prints DEFECT while the steady tenant's share with two workers is below 0.4 (a fair share is 0.5).

Usage: python3 docs/results/reliability-s41/repro_workers_tenant_share.py (SAGA_ROOT picks the tree)."""

import asyncio
import os
import sys
import time

import aiohttp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reliability-s39"))
import lib

SIM, PORT = 19531, 19530
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]
BATCH = ["b4", "b8", "b9", "b14", "b0", "b1", "b2", "b3"]  # worker 0: the first 4 (proxy/worker_set.py)
STEADY = ["s0", "s1", "s6", "s7"]  # all worker 1
RUN_S = 12.0
WARM_S = 2.0  # calls finishing before this are not counted (both tenants backlogged by then)
CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "reliability-s39", "saga_queue_gate2.yaml"
)


async def run() -> dict[str, int]:
    start = time.time()
    stop = start + RUN_S
    served = {"batch": 0, "steady": 0}
    failed = {"batch": 0, "steady": 0}

    async def agent(sid: str, tenant: str) -> None:
        async with aiohttp.ClientSession() as s:
            k = 0
            while time.time() < stop:
                status, *_ = await lib.chat(
                    s,
                    B,
                    f"{tenant} {sid} {k} " + lib.prompt(50, "q"),
                    sid=sid,
                    headers={"X-Tenant-ID": tenant},
                    max_tokens=40,
                    timeout=30,
                )
                if time.time() - start >= WARM_S and time.time() < stop:
                    if status == 200:
                        served[tenant] += 1
                    else:
                        failed[tenant] += 1
                k += 1

    await asyncio.gather(*(agent(x, "batch") for x in BATCH), *(agent(x, "steady") for x in STEADY))
    if any(failed.values()):
        print(f"failed calls: {failed}")
    return served


def compare(run, start_sims, start_proxy, what: str, share_of: str) -> None:
    """One process, then two workers: `run()` -> calls served per tenant after the warm-up; prints each and
    DEFECT while the steady tenant's share of `share_of` with two workers is below 0.4 (fair: 0.5)."""
    shares = []
    for workers in (1, 2):
        sims, proxy = start_sims(), start_proxy(workers)
        try:
            served = asyncio.run(run())
        finally:
            lib.stop(proxy)
            lib.stop(sims)
        shares.append(served["steady"] / max(1, sum(served.values())))
        print(
            f"workers={workers}: {what} served after {WARM_S:.0f}s: {served}; "
            f"the steady tenant's share {shares[-1]:.2f}"
        )
    print(
        f"DEFECT: with 2 workers the steady tenant got {shares[-1]:.2f} of {share_of}, against a fair 0.5"
        if shares[-1] < 0.4
        else "ok"
    )


if __name__ == "__main__":
    compare(
        run,
        lambda: lib.start_sims(SIM, 1, 20000),
        lambda workers: lib.start_proxy(PORT, R, config=CONFIG, extra=["--workers", str(workers)]),
        "calls",
        "the gate",
    )
