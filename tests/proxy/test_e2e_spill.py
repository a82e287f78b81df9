"""End-to-end over loopback: calls of one session in parallel spill to another replica when theirs is full.

Found by two reviews (docs/results/reliability.md, forty-eighth and forty-ninth sessions): an agent fanning
out 8 parallel calls in its session sent all 8 to its replica, whose KV could not hold them, while the other
idled (1.45x round-robin's time); an app sending one `prompt_cache_key` with every call (OpenAI's field,
read as the session) had every call on one replica (0.61x round-robin's rate). What is asserted is where the
calls went and what the proxy counted, never how long anything took.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from proxy.config import ProxyConfig
from proxy.scheduler.registry import PRESETS
from proxy.server import running_proxy
from simulator.server import ReplicaFleet, start_fleet


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(2, profile="tiny-cpu")  # 4,224 tokens of KV each
    yield fleet
    await fleet.close()


def config(fleet: ReplicaFleet, spill: bool = True) -> ProxyConfig:
    saga = PRESETS["saga"]
    assert saga.stealing is not None
    policy = msgspec.structs.replace(saga, stealing=msgspec.structs.replace(saga.stealing, spill=spill))
    return ProxyConfig(replicas=list(fleet.urls), port=0, seed=1, health_interval_s=0.2, policy=policy)


async def capacities_known(http: aiohttp.ClientSession, url: str) -> None:
    """Spill weighs each replica's KV: wait for the first probes to read it."""
    for _ in range(100):
        async with http.get(f"{url}/saga/v1/replicas") as r:
            rows = (await r.json())["replicas"]
        if all(row["kv_capacity_tokens"] > 0 for row in rows):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"replicas' KV capacity never read: {rows}")


async def chat(http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]) -> str:
    async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        await r.read()
        return r.headers["X-Saga-Replica"]


async def fan_out(
    fleet: ReplicaFleet, spill: bool, context_words: int = 200, max_tokens: int = 500
) -> tuple[list[str], str, str, dict[str, Any]]:
    """A session's first call, 8 calls of it at once (sharing its prefix: system prompt and task; each
    with `max_tokens` of answer), then its next call alone: the replicas of each, and the proxy's state."""
    system = {"role": "system", "content": "You are a coding agent. " + "rules " * context_words}
    task = [system, {"role": "user", "content": "Task: fix the build. " + "detail " * 40}]
    headers = {"X-Session-ID": "fan-out"}
    async with (
        running_proxy(config(fleet, spill)) as url,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
    ):
        await capacities_known(http, url)
        first = await chat(http, url, {"model": "saga-sim", "messages": task, "max_tokens": 16}, headers)
        bodies = [
            {
                "model": "saga-sim",
                "messages": [*task, {"role": "user", "content": f"explore part {k}: " + "area " * 30}],
                "max_tokens": max_tokens,
                "ignore_eos": True,
            }
            for k in range(8)
        ]
        went = await asyncio.gather(*(chat(http, url, body, headers) for body in bodies))
        after = await chat(http, url, {"model": "saga-sim", "messages": task, "max_tokens": 16}, headers)
        async with http.get(f"{url}/saga/v1/state") as r:
            state = await r.json()
    return list(went), first, after, state


async def test_parallel_calls_of_one_session_spill_to_the_other_replica(fleet: ReplicaFleet) -> None:
    """8 answers of 500 tokens beside one another: more than a replica's 4,224 tokens of KV."""
    went, first, after, state = await fan_out(fleet, spill=True)
    assert set(went) == set(fleet.urls), went  # both replicas ran part of the fan-out
    assert state["spills"] == sum(r != first for r in went) >= 1, state
    assert after == first  # the session stays bound where it was: its next call alone goes back
    assert state["in_flight"] == 0
    assert all(not row["in_flight"] for row in state["replicas"])


async def test_with_spill_off_the_fan_out_stays_on_one_replica(fleet: ReplicaFleet) -> None:
    """What the reviews found, and what `stealing.spill: false` still does (for ablations)."""
    went, first, _, state = await fan_out(fleet, spill=False)
    assert set(went) == {first}
    assert state["spills"] == 0


async def test_one_conversations_calls_under_one_cache_key_use_both_replicas(fleet: ReplicaFleet) -> None:
    """16 calls at once under one `prompt_cache_key` that open alike (one instruction, then each its own
    question): one conversation to the proxy (proxy/cache_key_conversations.py tells conversations apart by
    their first user message), its calls spread by the spill."""
    async with (
        running_proxy(config(fleet)) as url,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
    ):
        await capacities_known(http, url)
        bodies = [
            {
                "model": "saga-sim",
                "prompt_cache_key": "my-app",
                "max_tokens": 64,
                "messages": [
                    {"role": "user", "content": "Answer the question below."},
                    {"role": "user", "content": f"client {n} asks: " + "word " * 300},
                ],
            }
            for n in range(16)
        ]
        went = await asyncio.gather(*(chat(http, url, body, {}) for body in bodies))
        async with http.get(f"{url}/saga/v1/state") as r:
            state = await r.json()
    assert set(went) == set(fleet.urls), went
    assert state["spills"] >= 1 and state["sessions"] == 1  # one session still, its calls spread
    assert state["cache_keys"]["split_calls"] == 0 and state["in_flight"] == 0


async def test_parallel_calls_sharing_a_long_prefix_stay_where_it_is_held() -> None:
    """Found by a review of the change: each parallel call was counted with its whole prompt, so 8 short calls
    over one long shared prefix (held once by vLLM's prefix cache) were judged past a replica with 73% of its
    KV free, and half of them spilled and recomputed the prefix elsewhere (1.3-2x the fan-out's time). A
    call is now counted with what the replica does not hold of its prompt."""
    fleet = await start_fleet(2, profile="llama3-8b-h100", num_gpu_blocks=1_000, time_scale=20.0)  # 16k
    try:
        went, first, after, state = await fan_out(fleet, spill=True, context_words=2_000, max_tokens=32)
    finally:
        await fleet.close()
    assert set(went) == {first} and after == first, went
    assert state["spills"] == 0
