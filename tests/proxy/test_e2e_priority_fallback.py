"""End-to-end: the `saga` policy in front of vLLM replicas with and without `--scheduling-policy priority`.

vLLM answers 400 ("Priority scheduling is not enabled") to a request priority when it runs FCFS; the proxy
then sends that replica's calls without one. Any other 400 is the client's and reaches it as vLLM wrote it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from simulator.driver import RequestStream
from simulator.engine_types import EngineRequest
from simulator.server import ReplicaFleet, start_fleet


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def chat(content: str, max_tokens: int = 4) -> dict[str, object]:
    return {"model": "saga-sim", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}


@pytest.mark.parametrize("scheduling_policy", ["fcfs", "priority"])
async def test_saga_serves_replicas_with_and_without_priority_scheduling(
    http: aiohttp.ClientSession, scheduling_policy: str
) -> None:
    fleet = await start_fleet(2, time_scale=200.0, scheduling_policy=scheduling_policy)
    try:
        config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, health_interval_s=0.2, policy="saga")
        async with running_proxy(config) as url:
            for agent in range(3):  # workflow-age priorities 1, 2, 3: never 0, so FCFS vLLM would refuse them
                for step in range(2):
                    headers = {"X-Session-ID": f"agent-{agent}"}
                    async with http.post(
                        f"{url}/v1/chat/completions", json=chat(f"agent {agent} step {step}"), headers=headers
                    ) as r:
                        assert r.status == 200, await r.text()
                        assert (await r.json())["choices"][0]["message"]["content"]
    finally:
        await fleet.close()


async def test_a_bad_request_under_a_priority_reaches_the_client_as_the_replica_wrote_it(
    http: aiohttp.ClientSession,
) -> None:
    fleet = await start_fleet(1, time_scale=200.0, scheduling_policy="priority")
    try:
        config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, health_interval_s=0.2, policy="saga")
        async with running_proxy(config) as url:
            too_long = chat("hello", max_tokens=10_000_000)
            async with http.post(f"{url}/v1/chat/completions", json=too_long) as r:
                assert r.status == 400
                error = (await r.json())["error"]
                assert "max_tokens" in error["message"] or "context" in error["message"]
                assert r.headers["X-Saga-Replica"] == fleet.urls[0]
            async with http.post(f"{url}/v1/chat/completions", json=chat("still fine")) as r:
                assert r.status == 200
            async with http.get(f"{url}/saga/v1/state") as r:
                assert (await r.json())["in_flight"] == 0  # the refused call released what it held
    finally:
        await fleet.close()


def spy_priorities(fleet: ReplicaFleet) -> list[int]:
    """The priority of every request replica 0's engine was handed (refused ones included), in order."""
    seen: list[int] = []
    driver = fleet.replicas[0].driver
    submit = driver.submit

    def recording(req: EngineRequest) -> RequestStream:
        seen.append(req.priority)
        return submit(req)

    driver.submit = recording  # type: ignore[method-assign]
    return seen


async def call_until_served(http: aiohttp.ClientSession, url: str, session_id: str) -> None:
    """One call, repeated while the proxy has no replica up yet (a 503 never reaches a replica)."""
    for _ in range(100):
        async with http.post(
            f"{url}/v1/chat/completions", json=chat("hi"), headers={"X-Session-ID": session_id}
        ) as r:
            if r.status == 200:
                return
            assert r.status == 503, await r.text()
        await asyncio.sleep(0.05)
    raise AssertionError("the proxy never served the call")


async def test_a_refused_priority_is_remembered_and_forgotten_when_the_replica_is_removed(
    http: aiohttp.ClientSession,
) -> None:
    fleet = await start_fleet(1, time_scale=200.0, scheduling_policy="fcfs")
    try:
        seen = spy_priorities(fleet)
        # A long memory: only the removal can make the proxy ask again.
        config = ProxyConfig(
            replicas=fleet.urls,
            port=0,
            seed=1,
            health_interval_s=0.2,
            policy="saga",
            priority_reprobe_s=3600.0,
        )
        async with running_proxy(config) as url:
            await call_until_served(http, url, "agent-a")
            assert len(seen) == 2 and seen[0] != 0 and seen[1] == 0  # refused with a priority, then without
            seen.clear()
            await call_until_served(http, url, "agent-b")
            assert seen == [0]  # remembered: no second probe
            replica = {"url": fleet.urls[0]}
            async with http.post(f"{url}/saga/v1/replicas/remove", json=replica) as r:
                assert r.status == 200
            async with http.post(f"{url}/saga/v1/replicas", json=replica) as r:
                assert r.status == 201
            seen.clear()
            await call_until_served(http, url, "agent-c")
            assert len(seen) == 2 and seen[0] != 0 and seen[1] == 0  # a new replica: asked again
    finally:
        await fleet.close()


async def test_a_replica_restarted_with_priority_scheduling_gets_priorities_again(
    http: aiohttp.ClientSession,
) -> None:
    fleet = await start_fleet(1, time_scale=200.0, scheduling_policy="fcfs")
    port = int(fleet.urls[0].rsplit(":", 1)[1])
    try:
        config = ProxyConfig(
            replicas=fleet.urls, port=0, seed=1, health_interval_s=0.1, policy="saga", priority_reprobe_s=0.5
        )
        async with running_proxy(config) as url:
            seen = spy_priorities(fleet)
            await call_until_served(http, url, "agent-a")
            assert len(seen) == 2 and seen[0] != 0 and seen[1] == 0
            await fleet.close()  # the operator restarts vLLM with --scheduling-policy priority
            fleet = await start_fleet(1, base_port=port, time_scale=200.0, scheduling_policy="priority")
            seen = spy_priorities(fleet)
            await asyncio.sleep(0.6)  # past priority_reprobe_s: the next call asks again
            await call_until_served(http, url, "agent-b")
            assert len(seen) == 1 and seen[0] != 0  # accepted with its priority, no fallback
            await call_until_served(http, url, "agent-c")
            assert len(seen) == 2 and seen[1] != 0  # and the calls after it keep theirs
    finally:
        await fleet.close()
