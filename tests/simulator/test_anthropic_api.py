"""The simulated replica's Anthropic Messages API (`/v1/messages`, what Claude Code speaks to vLLM): vLLM's
answer and event shapes, usage with the prefix-cache hit, tool_use blocks, bad input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulator.server import ReplicaFleet, start_fleet
from tests.anthropic_tools import TOOLS
from tests.simulator.named_events import named_events

SYSTEM = "You are a coding agent in a terminal. Use the tools. " * 30


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(1, time_scale=1000.0)
    yield fleet
    await fleet.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, **body: Any) -> tuple[int, str]:
    async with http.post(f"{url}/v1/messages", json={"model": "saga-sim", **body}) as r:
        return r.status, await r.text()


async def test_a_conversation_grows_and_its_second_call_hits_the_prefix_cache(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.urls[0]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Fix the failing test."}]
    status, raw = await post(http, url, system=SYSTEM, messages=messages, max_tokens=8)
    first = json.loads(raw)
    assert status == 200 and first["type"] == "message" and first["role"] == "assistant"
    assert first["content"][0]["type"] == "text" and first["stop_reason"] == "max_tokens"
    assert set(first["usage"]) == {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }
    messages += [
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": [{"type": "text", "text": "It still fails."}]},
    ]
    status, raw = await post(http, url, system=SYSTEM, messages=messages, max_tokens=8)
    second = json.loads(raw)["usage"]
    assert status == 200 and second["input_tokens"] > first["usage"]["input_tokens"]
    assert second["cache_read_input_tokens"] >= first["usage"]["input_tokens"] // 2


async def test_tools_answer_with_a_tool_use_block_and_take_its_result_back(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.urls[0]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "run the tests"}]
    status, raw = await post(
        http, url, messages=messages, tools=TOOLS, tool_choice={"type": "any"}, max_tokens=40
    )
    answer = json.loads(raw)
    (block,) = answer["content"]
    assert status == 200 and answer["stop_reason"] == "tool_use"
    assert block["type"] == "tool_use" and block["name"] == "Bash" and "command" in block["input"]
    messages += [
        {"role": "assistant", "content": answer["content"]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block["id"], "content": "2 failed"}],
        },
    ]
    status, raw = await post(http, url, messages=messages, tools=TOOLS, max_tokens=8)
    assert status == 200 and json.loads(raw)["stop_reason"] in ("end_turn", "max_tokens")


async def test_streams_send_vllms_events_with_the_usage_in_message_delta(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.urls[0]
    messages = [{"role": "user", "content": "hello"}]
    status, raw = await post(http, url, messages=messages, max_tokens=6, stream=True)
    streamed = named_events(raw)
    names = [name for name, _ in streamed]
    assert status == 200
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert streamed[0][1]["message"]["usage"]["input_tokens"] > 0
    delta = streamed[-2][1]
    assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"]["output_tokens"] == 6
    text = "".join(d["delta"]["text"] for n, d in streamed if n == "content_block_delta")
    assert text

    status, raw = await post(
        http,
        url,
        messages=messages,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "Bash"},
        max_tokens=40,
        stream=True,
    )
    streamed = named_events(raw)
    assert streamed[1][1]["content_block"]["type"] == "tool_use"
    partial = "".join(d["delta"]["partial_json"] for n, d in streamed if n == "content_block_delta")
    assert "command" in json.loads(partial) and streamed[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"messages": [{"role": "robot", "content": "x"}], "max_tokens": 4}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "image"}]}], "max_tokens": 4}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "system": 5, "max_tokens": 4}, "system"),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": TOOLS,
                "tool_choice": {"type": "x"},
                "max_tokens": 4,
            },
            "tool_choice",
        ),
    ],
)
async def test_bad_requests_are_400s_naming_the_parameter(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, body: dict[str, Any], param: str
) -> None:
    status, raw = await post(http, fleet.urls[0], **body)
    assert status == 400 and json.loads(raw)["error"]["param"] == param, raw
