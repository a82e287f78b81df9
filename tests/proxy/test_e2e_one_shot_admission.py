"""End-to-end over loopback: one-shot calls never wait for KV held for them on a small replica.

Found over HTTP with the default `saga` policy in front of a simulated replica of 9,600 (or 64,000) tokens:
each one-shot call naming no session (inferred as a new workflow) held ~1,000 tokens of predicted growth
for `max_hold_s` (120 s), so the 15th of a sequence waited two minutes with nothing running, and 16
clients sending one fixed prompt stalled after ~200 calls (inference joins calls repeating an opening into
one session, whose repeats counted as a workflow coming back). An agent type holds between calls only once
one of its calls comes back, longer than its last one (proxy/scheduler/admission.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from simulator.server import ReplicaFleet, start_fleet

CAPACITY_BLOCKS = 600  # 9,600 tokens in blocks of 16: ~14 holds of the prior's ~1,000-token growth


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(1, time_scale=200.0, profile="llama3-8b-h100", num_gpu_blocks=CAPACITY_BLOCKS)
    yield fleet
    await fleet.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # a call held for a hold to lapse waited up to 120 s: well past this
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def chat(http: aiohttp.ClientSession, url: str, messages: list[dict[str, Any]]) -> str:
    body = {"model": "saga-sim", "messages": messages, "max_tokens": 8}
    async with http.post(f"{url}/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        return str(r.headers["X-Session-ID"])


async def admission(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/saga/v1/state") as r:
        state: dict[str, Any] = (await r.json())["admission"]
        return state


async def test_one_shot_calls_and_one_prompt_repeated_hold_nothing_and_never_wait(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, health_interval_s=0.2)
    assert config.policy == "saga"
    async with running_proxy(config) as url:
        for n in range(40):  # one after another: each a new workflow of one agent type
            await chat(http, url, [{"role": "user", "content": f"question {n}: what is {n} squared?"}])
            state = await admission(http, url)
            assert state["waiting"] == 0 and set(state["reserved_tokens"].values()) <= {0}

        async def client(rounds: int) -> None:
            for _ in range(rounds):
                await chat(http, url, [{"role": "user", "content": "hello there, tell me a story"}])

        await asyncio.gather(*(client(10) for _ in range(8)))
        state = await admission(http, url)
        assert state["waiting"] == 0 and state["admitted_overdue"] == 0
        assert set(state["reserved_tokens"].values()) <= {0}

        # an agent's call comes back, longer: its type holds its KV between calls from then on
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a coding agent. " * 20},
            {"role": "user", "content": "Fix the failing test in module alpha."},
        ]
        for n in range(2):
            await chat(http, url, messages)
            messages += [
                {"role": "assistant", "content": "ran the tests"},
                {"role": "user", "content": f"{n}"},
            ]
        assert sum((await admission(http, url))["reserved_tokens"].values()) > 0


async def test_a_responses_agent_continuing_by_previous_response_id_holds_between_calls(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    """A Responses API call continuing a stored response sends only what is new (shorter than the call
    before it): it comes back all the same."""
    config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, health_interval_s=0.2)
    async with running_proxy(config) as url:
        body: dict[str, Any] = {
            "model": "saga-sim",
            "input": "Fix the failing test. " * 40,
            "max_output_tokens": 8,
        }
        for _ in range(2):
            async with http.post(f"{url}/v1/responses", json=body) as r:
                assert r.status == 200, await r.text()
                answer = await r.json()
            body = {
                "model": "saga-sim",
                "input": "ok",
                "previous_response_id": answer["id"],
                "max_output_tokens": 8,
            }
        assert sum((await admission(http, url))["reserved_tokens"].values()) > 0


async def test_one_shot_calls_sharing_a_conversations_agent_type_never_wait_long(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    """Found by an adversarial review: one two-turn chat naming no session (agent type `default`, as every
    call without a system prompt) proved the type, and the 15th later one-shot call of it waited 121 s on an
    idle replica (round-robin: 0.1 s for all 40). Holds are now the sessions' own to earn (a call that went
    on), or their type's where its first gaps come back; a hold the prior sized yields to waiting work on an
    idle replica, and counts as unused, so the one-shot calls soon stop holding."""
    config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, health_interval_s=0.2)
    async with running_proxy(config) as url:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "Tell me about the sea."}]
        for n in range(2):
            await chat(http, url, messages)
            messages += [{"role": "assistant", "content": "It is wide."}, {"role": "user", "content": f"{n}"}]
        for n in range(40):  # each answered within the client's timeout (20 s; before: 121 s for one)
            await chat(http, url, [{"role": "user", "content": f"question {n}: what is {n} squared?"}])
        state = await admission(http, url)
    assert state["waiting"] == 0 and state["admitted_overdue"] == 0
