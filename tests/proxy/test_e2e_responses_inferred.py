"""End-to-end over loopback: a stateless Responses API conversation (`store: false`, its whole history sent
again as `input` each turn, no session named, no `previous_response_id`) is one session, inferred by prefix
chaining as a chat conversation is: its answers' message and function-call items, sent back as the client
got them, are matched to what the proxy read of each answer, streamed or whole. Before (the nineteenth
review), each turn was a session of its own, so its turns went to different replicas."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from simulator.server import ReplicaFleet, start_fleet

TOOLS = [{"type": "function", "name": "run_tests", "parameters": {"type": "object"}}]


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(3, time_scale=200.0)
    yield fleet
    await fleet.close()


async def turn(
    http: aiohttp.ClientSession, url: str, history: list[dict[str, Any]], stream: bool, tools: bool
) -> tuple[str, str, list[dict[str, Any]]]:
    """(session, replica, the answer's output items) of one turn of a stateless conversation."""
    body: dict[str, Any] = {
        "model": "saga-sim",
        "instructions": "You are a coding agent. Fix the failing test.",
        "input": history,
        "store": False,
        "stream": stream,
        "max_output_tokens": 6,
    }
    if tools:
        body["tools"] = TOOLS
    async with http.post(f"{url}/v1/responses", json=body) as r:
        text = await r.text()
        assert r.status == 200, text
        session, replica = r.headers["X-Session-ID"], r.headers["X-Saga-Replica"]
    if stream:
        text = [line[6:] for line in text.splitlines() if line.startswith("data: ")][-1]
        answer = json.loads(text)["response"]
    else:
        answer = json.loads(text)
    return session, replica, answer["output"]


@pytest.mark.parametrize("policy", ["session-affinity", "saga"])
async def test_a_stateless_responses_conversation_is_one_session_on_one_replica(
    fleet: ReplicaFleet, policy: str
) -> None:
    config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, policy=policy, access_log=False)
    async with running_proxy(config) as url, aiohttp.ClientSession() as http:
        conversations = []
        # the simulated replica answers function calls when given tools, text otherwise
        for task, tools in (("test_parser fails", True), ("test_cache fails", False)):
            history: list[dict[str, Any]] = [{"role": "user", "content": f"The {task}."}]
            sessions, replicas = [], []
            for step in range(6):
                session, replica, output = await turn(http, url, history, step % 2 == 1, tools)
                assert {item["type"] for item in output} == {"function_call" if tools else "message"}
                sessions.append(session)
                replicas.append(replica)
                history += output  # sent back as received (message and function_call items, ids and all)
                for item in output:
                    if item.get("type") == "function_call":
                        result = {"type": "function_call_output", "call_id": item["call_id"], "output": "ok"}
                        history.append(result)
                history.append({"role": "user", "content": f"step {step} done"})
            assert len(set(sessions)) == 1, sessions
            assert len(set(replicas)) == 1, replicas
            conversations.append(sessions[0])
        assert conversations[0] != conversations[1]
