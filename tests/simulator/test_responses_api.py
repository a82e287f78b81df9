"""The simulated replica's Responses API: a chain through `previous_response_id` reuses its prefix cache, the
store is the replica's own (vLLM's 404 elsewhere), function tools, the streamed events, bad input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from simulator.responses_api import ResponseStore, StoredResponse
from simulator.server import ReplicaFleet, start_fleet
from tests.simulator.named_events import named_events

TIME_SCALE = 1000.0
INSTRUCTIONS = "You are a coding agent. Use the tools to fix the repository. " * 30
TOOLS = [
    {
        "type": "function",
        "name": "run_tests",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(2, time_scale=TIME_SCALE)
    yield fleet
    await fleet.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def respond(http: aiohttp.ClientSession, url: str, **body: Any) -> tuple[int, Any]:
    async with http.post(url + "/v1/responses", data=msgspec.json.encode({"model": "saga-sim", **body})) as r:
        return r.status, await r.json(content_type=None)


async def test_a_chain_of_responses_grows_one_conversation_and_hits_the_prefix_cache(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.urls[0]
    status, first = await respond(
        http,
        url,
        input="Fix the failing test in tests/test_io.py.",
        instructions=INSTRUCTIONS,
        max_output_tokens=8,
    )
    assert status == 200, first
    assert first["id"].startswith("resp_") and first["object"] == "response"
    assert (
        first["output"][0]["type"] == "message" and first["output"][0]["content"][0]["type"] == "output_text"
    )
    used = first["usage"]
    assert used["total_tokens"] == used["input_tokens"] + used["output_tokens"] and used["output_tokens"] == 8
    assert first["status"] == "incomplete" and first["incomplete_details"] == {"reason": "max_output_tokens"}

    status, second = await respond(
        http,
        url,
        input="The test still fails.",
        instructions=INSTRUCTIONS,
        previous_response_id=first["id"],
        max_output_tokens=8,
    )
    assert status == 200, second
    assert second["previous_response_id"] == first["id"]
    # the stored conversation came first: a longer prompt whose head (instructions, first turn) is cached
    assert second["usage"]["input_tokens"] > used["input_tokens"]
    assert second["usage"]["input_tokens_details"]["cached_tokens"] >= used["input_tokens"] // 2

    async with http.get(url + f"/v1/responses/{second['id']}") as r:
        assert r.status == 200 and (await r.json())["id"] == second["id"]


async def test_the_store_is_the_replicas_own_as_vllms_is(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    status, first = await respond(http, fleet.urls[0], input="hello", max_output_tokens=4)
    assert status == 200
    status, body = await respond(http, fleet.urls[1], input="again", previous_response_id=first["id"])
    assert status == 404
    assert body["error"]["message"] == f"Response with id '{first['id']}' not found."
    assert body["error"]["param"] == "response_id" and body["error"]["type"] == "invalid_request_error"
    # not stored: nothing to continue from, even on the replica that answered
    status, unstored = await respond(http, fleet.urls[0], input="hello", max_output_tokens=4, store=False)
    assert status == 200
    status, _ = await respond(http, fleet.urls[0], input="again", previous_response_id=unstored["id"])
    assert status == 404


def test_the_store_keeps_the_latest_responses_only() -> None:
    store = ResponseStore(limit=3)
    for i in range(5):
        store.put(f"resp_{i}", StoredResponse([], {"id": f"resp_{i}"}))
    assert [store.get(f"resp_{i}") is not None for i in range(5)] == [False, False, True, True, True]


async def test_function_tools_answer_with_a_call_whose_output_continues_the_chain(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.urls[0]
    status, first = await respond(
        http, url, input="fix it", tools=TOOLS, tool_choice="required", max_output_tokens=40
    )
    assert status == 200, first
    call = first["output"][0]
    assert call["type"] == "function_call" and call["name"] == "run_tests"
    assert "path" in json.loads(call["arguments"]) and call["status"] == "completed"
    status, second = await respond(
        http,
        url,
        previous_response_id=first["id"],
        input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "2 failed"}],
        tools=TOOLS,
        tool_choice={"type": "function", "name": "run_tests"},
        max_output_tokens=40,
    )
    assert status == 200, second
    assert second["output"][0]["type"] == "function_call"


async def test_streamed_text_and_calls_send_the_named_events_and_end_with_the_whole_response(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.urls[0]
    body = {"model": "saga-sim", "input": "hello", "max_output_tokens": 6, "stream": True}
    async with http.post(url + "/v1/responses", json=body) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        streamed = named_events(await r.text())
    names = [name for name, _ in streamed]
    assert names[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert names[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in streamed] == list(range(len(streamed)))
    text = "".join(data["delta"] for name, data in streamed if name == "response.output_text.delta")
    done = streamed[-1][1]["response"]
    assert done["output"][0]["content"][0]["text"] == text and done["usage"]["output_tokens"] == 6
    # the streamed response is stored like a whole one
    status, _ = await respond(http, url, input="more", previous_response_id=done["id"], max_output_tokens=2)
    assert status == 200

    body = {"model": "saga-sim", "input": "go", "tools": TOOLS, "tool_choice": "required", "stream": True}
    async with http.post(url + "/v1/responses", json={**body, "max_output_tokens": 40}) as r:
        streamed = named_events(await r.text())
    pieces = "".join(d["delta"] for n, d in streamed if n == "response.function_call_arguments.delta")
    item = streamed[-1][1]["response"]["output"][0]
    assert item["type"] == "function_call" and pieces == item["arguments"]
    assert "response.function_call_arguments.done" in [n for n, _ in streamed]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": [{"type": "computer_call"}]}, "input"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input"),
        ({"input": ["text"]}, "input"),
        ({"input": "x", "tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ],
)
async def test_bad_input_is_a_400_naming_the_parameter(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, body: dict[str, Any], param: str
) -> None:
    status, answer = await respond(http, fleet.urls[0], **body)
    assert status == 400, answer
    assert answer["error"]["param"] == param
