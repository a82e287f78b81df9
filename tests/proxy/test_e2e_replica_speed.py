"""End-to-end over loopback: the default policy tells a slow replica from a fast one and moves work off it.

Found by a review (docs/results/reliability.md, forty-ninth session): with one simulated replica of the
Llama-3-8B-on-H100 profile and one of Llama-3-70B-TP4-on-A100 (about four times slower a token), `saga` split
a burst of agents evenly and kept each on its replica to the end: 1.20-1.26x least-request's mean task time.
The proxy now measures each replica's time per completion token at equal load (replica_speed.py) and moves
workflows bound to the slower replica to the faster one while that is less loaded by the weighted count.
What is asserted is what the proxy decided (its state and where the calls went), not how long anything took.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from simulator.server import ReplicaFleet, start_fleet

TIME_SCALE = 20.0  # 8B: ~0.4 ms a token; 70B on A100s: ~1.6 ms


@pytest.fixture
async def fleets() -> AsyncIterator[tuple[ReplicaFleet, ReplicaFleet]]:
    fast = await start_fleet(1, time_scale=TIME_SCALE, profile="llama3-8b-h100", num_gpu_blocks=4_000)
    slow = await start_fleet(1, time_scale=TIME_SCALE, profile="llama3-70b-tp4-a100", num_gpu_blocks=4_000)
    yield fast, slow
    await fast.close()
    await slow.close()


async def agent(http: aiohttp.ClientSession, url: str, n: int, calls: int) -> list[str]:
    """A coding agent's conversation: each call's answer and a tool result go on the next. Its replicas."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a coding agent. " * 30},
        {"role": "user", "content": f"Fix the failing test number {n}. " * 10},
    ]
    went = []
    for i in range(calls):
        body = {"model": "saga-sim", "messages": messages, "max_tokens": 64, "ignore_eos": True}
        async with http.post(
            f"{url}/v1/chat/completions", json=body, headers={"X-Session-ID": f"agent-{n}"}
        ) as r:
            assert r.status == 200, await r.text()
            went.append(r.headers["X-Saga-Replica"])
            answer = (await r.json())["choices"][0]["message"]["content"]
        messages += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": f"tool result {i}: " + "ok " * 40},
        ]
        await asyncio.sleep(0.02)
    return went


async def test_workflows_on_a_slower_replica_move_to_the_faster_one(
    fleets: tuple[ReplicaFleet, ReplicaFleet],
) -> None:
    fast, slow = fleets
    (fast_url,), (slow_url,) = fast.urls, slow.urls
    config = ProxyConfig(replicas=[fast_url, slow_url], port=0, seed=1, health_interval_s=0.2)
    assert config.policy == "saga"
    async with (
        running_proxy(config) as url,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
    ):
        went = await asyncio.gather(*(agent(http, url, n, 12) for n in range(12)))
        async with http.get(f"{url}/saga/v1/replicas") as r:
            rows = {row["replica_id"]: row for row in (await r.json())["replicas"]}
        async with http.get(f"{url}/saga/v1/state") as r:
            state = await r.json()
        async with http.get(f"{url}/metrics") as r:
            metrics = await r.text()
    assert rows[fast_url]["slowness"] == 1.0
    assert rows[slow_url]["slowness"] >= 1.5, rows
    assert f'saga_replica_slowness{{replica="{slow_url}"}} {rows[slow_url]["slowness"]}' in metrics
    assert state["moves"] >= 1
    # agents move from the slow replica to the fast one, not the other way (the unit tests check that a
    # speed move never goes back; here, before the speeds are measured, or with a probe of the slow replica
    # timing out on a busy machine, work stealing may give the slow one a workflow)
    steps = [(a, b) for calls in went for a, b in itertools.pairwise(calls) if a != b]
    assert steps.count((slow_url, fast_url)) > steps.count((fast_url, slow_url)), steps
    last_calls = [calls[-1] for calls in went]
    assert last_calls.count(fast_url) > last_calls.count(slow_url), last_calls
