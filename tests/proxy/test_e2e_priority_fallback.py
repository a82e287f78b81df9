"""End-to-end: the `saga` policy in front of vLLM replicas with and without `--scheduling-policy priority`.

vLLM answers 400 ("Priority scheduling is not enabled") to a request priority when it runs FCFS; the proxy
then sends that replica's calls without one. Any other 400 is the client's and reaches it as vLLM wrote it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from simulator.server import start_fleet


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
