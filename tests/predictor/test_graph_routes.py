"""The admin API over loopback: graphs learned from real traffic through the proxy, as JSON and DOT."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest

from proxy import graph_routes
from proxy.config import ProxyConfig
from proxy.server import running_proxy
from simulator.server import ReplicaFleet, start_fleet


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(1, time_scale=200.0)
    yield fleet
    await fleet.close()


async def test_graphs_fill_from_traffic_and_render(fleet: ReplicaFleet) -> None:
    config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, health_interval_s=0.2)
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "You are a coding agent. " * 40},
        {"role": "user", "content": "Fix the test. " * 20},
    ]
    headers = {"X-Session-ID": "agent-1", "X-Agent-Type": "coder"}
    async with running_proxy(config) as url, aiohttp.ClientSession() as http:
        for turn in range(4):
            body = {"model": "saga-sim", "messages": messages, "max_tokens": 4}
            async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                assert r.status == 200
            messages = [
                *messages,
                {"role": "assistant", "content": f"run tests {turn}"},
                {"role": "user", "content": "3 failed " * 30},
            ]
        async with http.get(f"{url}/saga/v1/graphs") as r:
            assert r.status == 200
            data = await r.json()
        async with http.get(f"{url}/saga/v1/graphs/coder.dot") as r:
            assert r.status == 200
            assert r.content_type == "text/vnd.graphviz"
            dot = await r.text()
        async with http.get(f"{url}/saga/v1/graphs/coder.dot?by=state") as r:
            assert r.status == 200
            states_dot = await r.text()
        async with http.get(f"{url}/saga/v1/graphs/nobody.dot") as r:
            assert r.status == 404
            error = (await r.json())["error"]
    assert data["agent_types"] == ["coder"]
    (graph,) = data["graphs"]
    assert graph["sessions_seen"] == 1
    transitions = sum(e["count"] for n in graph["nodes"] for e in n["edges"])
    assert transitions == 4  # start -> first state, then three calls after it
    assert dot.startswith('digraph "coder" {') and '"start" ->' in dot
    # The proxy does not see tool names yet: every state is `call`, one node once step buckets merge.
    assert '"start" -> "call"' in states_dot and '"call#' not in states_dot
    assert error["code"] == "unknown_agent_type" and "nobody" in error["message"]


class _Predictor:
    def __init__(self, agent_types: int) -> None:
        self.graphs = {f"agent-{i}": f"graph-{i}" for i in range(agent_types)}
        self.sessions: dict[str, object] = {}


class _Core:
    def __init__(self, agent_types: int) -> None:
        self.predictor = _Predictor(agent_types)


async def test_the_graphs_listing_is_built_a_graph_a_step_once_for_every_waiting_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each graph's JSON is built in its own step of the event loop (64 of them built in one step stalled
    every call for 0.6 s), once for all the requests waiting on it, and kept a while: a loop of requests
    does not rebuild it on every one."""
    built: list[tuple[str, int]] = []
    steps = 0

    def graph_json(graph: str) -> dict[str, str]:
        built.append((graph, steps))
        return {"graph": graph}

    async def ticker() -> None:
        nonlocal steps
        while True:
            steps += 1
            await asyncio.sleep(0)

    monkeypatch.setattr(graph_routes, "graph_json", graph_json)
    answer = graph_routes.GraphsAnswer(_Core(5))  # type: ignore[arg-type]
    ticking = asyncio.ensure_future(ticker())
    try:
        bodies = await asyncio.gather(*(answer.get() for _ in range(3)))
        again = await answer.get()
        answer.fresh_until = -math.inf  # kept until then: built anew after
        await answer.get()
    finally:
        ticking.cancel()
    assert len(set(bodies)) == 1 and again == bodies[0]
    data = msgspec.json.decode(bodies[0])
    assert data["agent_types"] == [f"agent-{i}" for i in range(5)] and len(data["graphs"]) == 5
    assert len(built) == 10  # twice five graphs: not once per request
    first_steps = [step for _, step in built[:5]]
    assert len(set(first_steps)) == 5  # each in a step of its own
