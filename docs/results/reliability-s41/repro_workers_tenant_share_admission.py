"""`--workers 2`, `saga` admission, one small replica: two tenants keep starting one-call workflows
(`X-Session-End: true`), both always with workflows waiting for KV. The batch tenant's workflows belong to
both workers (4 agents each); the steady tenant's 4 agents' workflows all belong to worker 1. The workers
take turns at admission, and each admits its own waiting workflows in its tenants' fair order; if that
order counts only what the worker itself admitted, the steady tenant gets a quarter of the admissions, not
its half (one process: about half). Prints DEFECT while its share with two workers is below 0.4.

Usage: python3 docs/results/reliability-s41/repro_workers_tenant_share_admission.py (SAGA_ROOT picks the
tree)."""

import asyncio
import itertools
import os
import sys
import time

import aiohttp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reliability-s39"))
import lib

sys.path.insert(0, lib.ROOT)
from repro_workers_tenant_share import WARM_S, compare

from proxy.worker_set import owner_of

SIM, PORT = 19541, 19540
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]
RUN_S = 12.0


def ids(tag: str, worker: int):
    return (f"{tag}-{i}" for i in itertools.count() if owner_of(f"{tag}-{i}", 2) == worker)


async def run() -> dict[str, int]:
    start = time.time()
    stop = start + RUN_S
    served = {"batch": 0, "steady": 0}
    failed = {"batch": 0, "steady": 0}

    async def agent(tenant: str, sessions) -> None:
        async with aiohttp.ClientSession() as s:
            while time.time() < stop:
                sid = next(sessions)
                status, *_ = await lib.chat(
                    s,
                    B,
                    lib.prompt(600, "q" + sid),
                    sid=sid,
                    max_tokens=30,
                    timeout=30,
                    headers={"X-Tenant-ID": tenant, "X-Session-End": "true"},
                )
                if time.time() - start >= WARM_S and time.time() < stop:
                    if status == 200:
                        served[tenant] += 1
                    else:
                        failed[tenant] += 1

    agents = [agent("batch", ids(f"b{k}", k % 2)) for k in range(8)]
    agents += [agent("steady", ids(f"s{k}", 1)) for k in range(4)]
    await asyncio.gather(*agents)
    if any(failed.values()):
        print(f"failed workflows: {failed}")
    return served


if __name__ == "__main__":
    compare(
        run,
        lambda: lib.start_sims(SIM, 1, 200),  # 3,200 tokens of KV: a few of these workflows at a time
        lambda workers: lib.start_proxy(PORT, R, extra=["--workers", str(workers)]),
        "workflows",
        "the admissions",
    )
