"""Simulated tool calls: schema-valid arguments, the tool-choice rules, vLLM's response and stream shapes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import msgspec
import pytest

from simulator.server import ReplicaFleet, start_fleet
from simulator.tool_calls import MAX_DEPTH, ToolCallStream, ToolsError, ToolSpec, arguments_for

TIME_SCALE = 1000.0

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 3},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
SEARCH = {
    "type": "object",
    "properties": {"query": {"type": "string"}, "limit": {"type": ["integer", "null"]}},
    "required": ["query"],
}

SCHEMAS: list[dict[str, Any]] = [
    {},
    {"type": "object", "properties": {}},
    WEATHER,
    SEARCH,
    {
        "type": "object",
        "properties": {
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1.5},
            "flag": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "minItems": 3},
            "mode": {"const": "fast"},
            "when": {"type": "string", "format": "date-time"},
            "note": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 12}]},
        },
        "required": ["ratio", "flag", "tags", "mode", "when", "note"],
    },
    {  # pydantic's shape: nested models under $defs, referenced
        "$defs": {
            "Point": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer", "maximum": -5}},
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "path": {"type": "array", "items": {"$ref": "#/$defs/Point"}, "minItems": 2, "maxItems": 2},
            "origin": {"$ref": "#/$defs/Point"},
            "meta": {
                "type": "object",
                "properties": {"deep": {"type": "object", "properties": {"k": {"enum": [1, 2, 3]}}}},
                "required": ["deep"],
            },
        },
        "required": ["path", "origin", "meta"],
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("seed", [0, 1, 7, 2**40 + 3])
def test_arguments_are_valid_for_their_schema_and_deterministic(schema: dict[str, Any], seed: int) -> None:
    arguments = arguments_for(schema, seed)
    jsonschema.validate(arguments, schema)
    assert arguments == arguments_for(schema, seed)
    assert set(arguments) == set(schema.get("required", []))


def test_recursive_schema_is_cut_at_the_depth_limit() -> None:
    schema = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"child": {"$ref": "#/$defs/Node"}, "v": {"type": "integer"}},
                "required": ["child", "v"],
            }
        },
        "$ref": "#/$defs/Node",
    }
    node: Any = arguments_for(schema, 3)
    depth = 0
    while "child" in node:
        node, depth = node["child"], depth + 1
    assert 0 < depth <= MAX_DEPTH


def _tools(*named: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": n, "parameters": p}} for n, p in named]


FIRST_TURN = [{"role": "system", "content": "s"}, {"role": "user", "content": "weather?"}]
AFTER_TOOL = [
    *FIRST_TURN,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
    },
    {"role": "tool", "tool_call_id": "c", "content": "sunny"},
]


def test_tool_choice_rules() -> None:
    tools = _tools(("get_weather", WEATHER), ("search", SEARCH))
    auto = ToolSpec.parse(tools, None)
    assert auto is not None and auto.choice == "auto"
    first = auto.decide(FIRST_TURN, 5)
    assert first is not None and first.finish_reason == "tool_calls" and first.content is None
    assert auto.decide(AFTER_TOOL, 5) is None  # k = 1: one tool call per user turn, then an answer
    two_turns = ToolSpec.parse(tools, "auto", {"saga_sim_tool_turns": 2})
    assert two_turns is not None and two_turns.decide(AFTER_TOOL, 5) is not None
    assert two_turns.decide([*AFTER_TOOL, *AFTER_TOOL[2:]], 5) is None
    # a new user turn starts the count again
    assert auto.decide([*AFTER_TOOL, {"role": "user", "content": "and tomorrow?"}], 5) is not None
    required = ToolSpec.parse(tools, "required")
    assert required is not None
    picked = {c.name for s in range(8) if (c := required.decide(AFTER_TOOL, s)) is not None}
    assert picked == {"get_weather", "search"}  # always a call, the tool chosen by the seed
    named = ToolSpec.parse(tools, {"type": "function", "function": {"name": "search"}})
    assert named is not None
    call = named.decide(AFTER_TOOL, 0)
    assert call is not None and call.name == "search" and call.finish_reason == "stop"
    jsonschema.validate(json.loads(call.arguments), SEARCH)
    none = ToolSpec.parse(tools, "none")
    assert none is not None and none.decide(FIRST_TURN, 0) is None
    assert ToolSpec.parse(None, None) is None and ToolSpec.parse(None, "none") is None


@pytest.mark.parametrize(
    ("tools", "choice", "param"),
    [
        ({"type": "function"}, None, "tools"),
        ([], None, "tools"),
        (["get_weather"], None, "tools[0]"),
        ([{"type": "retrieval", "function": {"name": "x"}}], None, "tools[0].type"),
        ([{"type": "function"}], None, "tools[0].function"),
        ([{"type": "function", "function": {"description": "no name"}}], None, "tools[0].function.name"),
        ([{"type": "function", "function": {"name": ""}}], None, "tools[0].function.name"),
        (_tools(("f", [])), None, "tools[0].function.parameters"),
        (None, "required", "tool_choice"),
        (_tools(("f", {})), "sometimes", "tool_choice"),
        (_tools(("f", {})), {"type": "function"}, "tool_choice.function"),
        (_tools(("f", {})), {"type": "function", "function": {"name": 3}}, "tool_choice.function.name"),
        (_tools(("f", {})), {"type": "function", "function": {"name": "g"}}, "tool_choice"),
    ],
)
def test_bad_tools_are_refused_naming_the_parameter(tools: Any, choice: Any, param: str) -> None:
    with pytest.raises(ToolsError) as info:
        ToolSpec.parse(tools, choice)
    assert info.value.param == param


def test_stream_splits_arguments_over_tokens_and_flushes_at_the_end() -> None:
    spec = ToolSpec.parse(_tools(("get_weather", WEATHER)), "required")
    assert spec is not None
    call = spec.decide(FIRST_TURN, 11)
    assert call is not None
    stream = ToolCallStream(call)
    first = stream.advance(1, False)
    assert first == [{"index": 0, "id": call.id, "type": "function", "function": {"name": "get_weather"}}]
    middle = [d for _ in range(3) for d in stream.advance(1, False)]
    last = stream.advance(1, True)
    assert len(middle) == 3 and all(set(d) == {"index", "function"} for d in middle)
    assert "".join(d["function"]["arguments"] for d in [*middle, *last]) == call.arguments


# ---- over HTTP ----------------------------------------------------------------------------------------


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(1, time_scale=TIME_SCALE)
    yield fleet
    await fleet.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _chat(http: aiohttp.ClientSession, fleet: ReplicaFleet, **body: Any) -> tuple[int, Any]:
    payload = {"model": "saga-sim", "max_tokens": 24, "ignore_eos": True, **body}
    async with http.post(f"{fleet.urls[0]}/v1/chat/completions", data=msgspec.json.encode(payload)) as r:
        if body.get("stream"):
            return r.status, (await r.read()).decode()
        return r.status, await r.json()


def _events(raw: str) -> list[Any]:
    data = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


async def test_required_tool_call_has_vllms_shape(fleet: ReplicaFleet, http: aiohttp.ClientSession) -> None:
    tools = _tools(("get_weather", WEATHER), ("search", SEARCH))
    status, body = await _chat(http, fleet, messages=FIRST_TURN, tools=tools, tool_choice="required")
    assert status == 200, body
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("chatcmpl-tool-") and call["type"] == "function"
    schema = {"get_weather": WEATHER, "search": SEARCH}[call["function"]["name"]]
    jsonschema.validate(json.loads(call["function"]["arguments"]), schema)
    # the engine generated max_tokens (ignore_eos): the tool call is the rendering of those tokens
    assert body["usage"]["completion_tokens"] == 24


async def test_named_auto_and_none(fleet: ReplicaFleet, http: aiohttp.ClientSession) -> None:
    tools = _tools(("get_weather", WEATHER), ("search", SEARCH))
    named = {"type": "function", "function": {"name": "search"}}
    _, body = await _chat(http, fleet, messages=AFTER_TOOL, tools=tools, tool_choice=named)
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "search"
    _, first = await _chat(http, fleet, messages=FIRST_TURN, tools=tools)  # auto by default
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert first["choices"][0]["message"]["content"] is None
    _, answer = await _chat(http, fleet, messages=AFTER_TOOL, tools=tools, tool_choice="auto")
    assert answer["choices"][0]["message"]["tool_calls"] == []
    assert answer["choices"][0]["message"]["content"] and answer["choices"][0]["finish_reason"] == "length"
    _, none = await _chat(http, fleet, messages=FIRST_TURN, tools=tools, tool_choice="none")
    assert none["choices"][0]["message"]["tool_calls"] == [] and none["choices"][0]["message"]["content"]


async def test_streamed_tool_call_assembles_to_the_whole_answer(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    tools = _tools(("get_weather", WEATHER))
    _, whole = await _chat(http, fleet, messages=FIRST_TURN, tools=tools, max_tokens=64)
    status, raw = await _chat(
        http,
        fleet,
        messages=FIRST_TURN,
        tools=tools,
        max_tokens=64,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert status == 200
    events = _events(raw)
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    tool_deltas = [tc for d in deltas for tc in d.get("tool_calls", [])]
    head = tool_deltas[0]
    assert head["index"] == 0 and head["id"].startswith("chatcmpl-tool-") and head["type"] == "function"
    assert head["function"] == {"name": "get_weather"}
    pieces = [tc["function"]["arguments"] for tc in tool_deltas[1:]]
    assert len(pieces) > 1  # split across chunks
    expected = whole["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert "".join(pieces) == expected  # same prompt, same call
    assert all("content" not in d or d["content"] == "" for d in deltas)
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
    assert finishes[-1] == "tool_calls" and finishes[:-1] == [None] * (len(finishes) - 1)
    assert events[-1]["usage"]["completion_tokens"] == 64


async def test_bad_tools_answer_400_in_vllms_error_shape(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    status, body = await _chat(
        http, fleet, messages=FIRST_TURN, tools=[{"type": "function", "function": {"parameters": {}}}]
    )
    assert status == 400
    assert body["error"]["type"] == "BadRequestError" and body["error"]["code"] == 400
    assert body["error"]["param"] == "tools[0].function.name"
    status, body = await _chat(http, fleet, messages=FIRST_TURN, tools="get_weather")
    assert status == 400 and body["error"]["param"] == "tools"


async def test_carrying_the_tool_call_back_still_hits_the_prefix_cache(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    tools = _tools(("get_weather", WEATHER))
    messages = [{"role": "system", "content": "You are an agent. " * 80}, FIRST_TURN[1]]
    _, first = await _chat(http, fleet, messages=messages, tools=tools)
    message = first["choices"][0]["message"]
    call_id = message["tool_calls"][0]["id"]
    followup = [*messages, message, {"role": "tool", "tool_call_id": call_id, "content": "sunny"}]
    _, second = await _chat(http, fleet, messages=followup, tools=tools)
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] >= 16 * (
        first["usage"]["prompt_tokens"] // 16
    )
