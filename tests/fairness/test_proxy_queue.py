"""The release queue over HTTP: a held call is answered once a slot frees, a full queue is a 429, and a client
that hangs up while held leaves nothing behind (loopback, simulated replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.scheduler.registry import PluginSpec
from proxy.scheduler.release import ReleaseQueueSpec
from proxy.server import running_proxy
from simulator.server import ReplicaFleet, start_fleet

MESSAGES = [{"role": "user", "content": "Summarise the failing tests. " * 20}]


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(1, time_scale=1.0)  # real-time steps: the long call stays long
    yield fleet
    await fleet.close()


def queued_config(urls: list[str]) -> ProxyConfig:
    queue = ReleaseQueueSpec(gate=PluginSpec("max-in-flight-gate", params={"max_in_flight": 1}), max_queued=1)
    return ProxyConfig(replicas=urls, port=0, seed=1, health_interval_s=5.0, queue=queue)


async def state_until(http: aiohttp.ClientSession, url: str, key: str, value: int) -> dict[str, Any]:
    for _ in range(400):  # bounded wait for the proxy to get there, not a timing assertion
        async with http.get(f"{url}/saga/v1/state") as s:
            state: dict[str, Any] = await s.json()
        if state[key] == value:
            break
        await asyncio.sleep(0.05)
    return state


async def post(http: aiohttp.ClientSession, url: str, session: str) -> tuple[int, dict[str, Any]]:
    body = {"model": "saga-sim", "messages": MESSAGES, "max_tokens": 8, "session_id": session}
    async with http.post(f"{url}/v1/chat/completions", json=body) as r:
        return r.status, await r.json()


async def test_held_call_answered_after_the_slot_frees_and_a_full_queue_is_429(fleet: ReplicaFleet) -> None:
    long = {"model": "saga-sim", "messages": MESSAGES, "max_tokens": 5000, "ignore_eos": True, "stream": True}
    async with aiohttp.ClientSession() as http, running_proxy(queued_config(fleet.urls)) as url:
        async with http.post(f"{url}/v1/chat/completions", json=long) as stream:
            await stream.content.readline()  # the only slot is taken
            held = asyncio.create_task(post(http, url, "b"))
            assert (await state_until(http, url, "queued", 1))["queued"] == 1
            status, body = await post(http, url, "c")
            assert status == 429
            assert body["error"]["type"] == "rate_limit_error" and body["error"]["code"] == "queue_full"
        # The stream is gone: its slot frees and the held call is dispatched and answered.
        status, body = await held
        assert status == 200 and body["choices"]
        state = await state_until(http, url, "in_flight", 0)
        assert state["queued"] == 0 and state["in_flight"] == 0


async def test_client_gone_while_held_is_withdrawn(fleet: ReplicaFleet) -> None:
    long = {"model": "saga-sim", "messages": MESSAGES, "max_tokens": 5000, "ignore_eos": True, "stream": True}
    async with aiohttp.ClientSession() as http, running_proxy(queued_config(fleet.urls)) as url:
        async with http.post(f"{url}/v1/chat/completions", json=long) as stream:
            await stream.content.readline()
            async with aiohttp.ClientSession() as other:
                held = asyncio.create_task(post(other, url, "b"))
                assert (await state_until(http, url, "queued", 1))["queued"] == 1
                held.cancel()
                await asyncio.gather(held, return_exceptions=True)
            assert (await state_until(http, url, "queued", 0))["queued"] == 0
        state = await state_until(http, url, "in_flight", 0)
        assert state["in_flight"] == 0 and state["queued"] == 0
        assert (await post(http, url, "d"))[0] == 200  # nothing leaked: the slot is free
