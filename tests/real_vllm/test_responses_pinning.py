"""The Responses API before two real, stock vLLM replicas (CPU build, tiny model, response store on): a stored
response can only be continued on the replica that answered it (the premise, and the simulated replica's
model of it), and SAGA sends every `previous_response_id` continuation back there, even under round-robin,
which would otherwise alternate replicas and get vLLM's 404 on every other turn."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from tests.real_vllm.real_vllm import Server, running_vllms

STORE_ON = {"VLLM_ENABLE_RESPONSES_API_STORE": "1"}


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[str]]:
    with running_vllms(
        Server(env=STORE_ON, name="responses-0"), Server(env=STORE_ON, name="responses-1")
    ) as urls:
        yield list(urls)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def model_of(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/v1/models") as r:
        return str((await r.json())["data"][0]["id"])


async def respond(
    http: aiohttp.ClientSession, url: str, model: str, previous: str | None, stream: bool = False
) -> tuple[int, dict[str, Any], str]:
    """(status, the response object or error, the replica the proxy named) of one turn."""
    body: dict[str, Any] = {"model": model, "input": "and then?", "max_output_tokens": 3, "stream": stream}
    if previous is not None:
        body["previous_response_id"] = previous
    async with http.post(f"{url}/v1/responses", json=body) as r:
        text = await r.text()
        replica = r.headers.get("X-Saga-Replica", "")
        if r.status == 200 and stream:
            completed = [line[6:] for line in text.splitlines() if line.startswith("data: ")][-1]
            return 200, json.loads(completed)["response"], replica
        return r.status, json.loads(text), replica


async def test_a_stored_response_continues_only_on_the_replica_that_answered_it(
    replicas: list[str], http: aiohttp.ClientSession
) -> None:
    model = await model_of(http, replicas[0])
    status, first, _ = await respond(http, replicas[0], model, None)
    assert status == 200, first
    status, same, _ = await respond(http, replicas[0], model, first["id"])
    assert status == 200 and same["previous_response_id"] == first["id"]
    status, other, _ = await respond(http, replicas[1], model, first["id"])
    assert status == 404
    assert other["error"]["message"] == f"Response with id '{first['id']}' not found."
    assert other["error"]["type"] == "invalid_request_error"  # the simulated replica answers the same


async def test_saga_keeps_a_responses_chain_on_its_replica_under_round_robin(
    replicas: list[str], http: aiohttp.ClientSession
) -> None:
    model = await model_of(http, replicas[0])
    config = ProxyConfig(replicas=replicas, port=0, policy="round-robin", access_log=False)
    async with running_proxy(config) as url:
        for chain in range(2):  # the second starts on the other replica: round-robin moved on
            previous, homes = None, set()
            for turn in range(4):
                status, answer, replica = await respond(http, url, model, previous, stream=turn % 2 == 1)
                assert status == 200, (chain, turn, answer)
                previous = answer["id"]
                homes.add(replica)
            assert len(homes) == 1


async def test_a_fresh_proxy_finds_which_real_replica_stored_a_response(
    replicas: list[str], http: aiohttp.ClientSession
) -> None:
    """vLLM's retrieve route (`GET /v1/responses/{id}`) answers where the response is stored: a proxy with no
    record of a chain (restarted, or another instance) pins its continuation there."""
    model = await model_of(http, replicas[0])
    config = ProxyConfig(replicas=replicas, port=0, policy="round-robin", access_log=False)
    async with running_proxy(config) as url:
        begun = [await respond(http, url, model, None) for _ in range(2)]
    assert {replica for _, _, replica in begun} == set(replicas)
    async with running_proxy(config) as url:
        for _, first, home in reversed(begun):  # round-robin alone would send each to the other replica
            status, answer, replica = await respond(http, url, model, first["id"])
            assert status == 200 and replica == home, answer
            async with http.get(f"{url}/v1/responses/{first['id']}") as r:  # retrieve goes there too
                assert r.status == 200 and r.headers["X-Saga-Replica"] == home
                assert (await r.json())["id"] == first["id"]
