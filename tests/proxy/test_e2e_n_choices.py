"""End-to-end over loopback: calls asking for `n` choices (vLLM's parallel sampling) through the proxy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from simulator.server import ReplicaFleet, start_fleet
from tests.recording_core import RecordingCore


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(2, time_scale=200.0)
    yield fleet
    await fleet.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


OPENING = [
    {"role": "system", "content": "You are a coding agent. " * 20},
    {"role": "user", "content": "Fix the failing test in module alpha."},
]


async def chat(
    http: aiohttp.ClientSession,
    url: str,
    messages: list[dict[str, Any]],
    stream: bool,
    n: int = 1,
    max_tokens: int = 8,
) -> tuple[str, list[str]]:
    """The session the proxy assigned and each choice's text."""
    body = {"messages": messages, "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}
    if n != 1:
        body["n"] = n
    async with http.post(f"{url}/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        session = r.headers["X-Session-ID"]
        if not stream:
            return session, [c["message"]["content"] for c in (await r.json())["choices"]]
        raw = (await r.read()).decode()
    texts = [""] * n
    for line in raw.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                texts[choice["index"]] += choice["delta"].get("content") or ""
    return session, texts


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("picked", [0, 1, 2])
async def test_agents_given_one_task_each_go_on_with_the_choice_they_picked(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, stream: bool, picked: int
) -> None:
    """Two agents given one task at once, each sampling three choices a call and going on with one of
    them: each goes on in its own session, whichever choice it picked (a conversation's opening cannot
    tell them apart; only the answer it sent back can)."""
    config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, health_interval_s=0.2)
    async with running_proxy(config) as url:
        # (answers of different lengths: agents answered alike word for word are one conversation)
        started = await asyncio.gather(*(chat(http, url, list(OPENING), stream, 3, 8 + i) for i in range(2)))
        sessions = [session for session, _ in started]
        conversations = [list(OPENING) for _ in started]
        for turn in range(3):
            later = []
            for i, (messages, (_, texts)) in enumerate(zip(conversations, started, strict=True)):
                assert len(set(texts)) == 3 and all(texts)
                messages += [
                    {"role": "assistant", "content": texts[picked]},
                    {"role": "tool", "content": f"{i}"},
                ]
                later.append(await chat(http, url, messages, stream, n=3))
            assert [session for session, _ in later] == sessions, f"turn {turn}"
            started = later
    assert sessions[0] != sessions[1]


@pytest.mark.parametrize(
    ("path", "n", "choices"),
    [
        ("/v1/chat/completions", 3, 3),
        ("/v1/chat/completions", "3", 3),  # vLLM reads these as 3 too (pydantic's lax mode)
        ("/v1/chat/completions", 3.0, 3),
        ("/v1/completions", 1e1, 10),
        ("/v1/chat/completions", None, 1),  # (null: 1 on chat; vLLM refuses it on completions)
        # vLLM has no `n` on these routes, and ignores one
        ("/v1/responses", 3, 1),
        ("/v1/messages", 3, 1),
    ],
)
async def test_the_choices_a_call_asks_for_are_read_as_the_replica_reads_them(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, path: str, n: object, choices: int
) -> None:
    """The review of the change: `n` sent as "16" or 16.0 was read as one choice, so the calls were speed
    samples (an alike replica then measured 6-10x slower), and `n` on the Responses API or /v1/messages
    multiplied the answer's cap, which a call beside another of its session is sized by (it spilled)."""
    body: dict[str, Any] = {"model": "saga-sim", "max_tokens": 4, "n": n}
    if path == "/v1/completions":
        body["prompt"] = "Once upon a time"
    elif path == "/v1/responses":
        body = {"model": "saga-sim", "input": "hi", "max_output_tokens": 4, "n": n}
    else:
        body["messages"] = [{"role": "user", "content": "hi"}]
    core = RecordingCore(fleet.urls)
    async with (
        running_proxy(ProxyConfig(replicas=fleet.urls, port=0), core) as url,
        http.post(f"{url}{path}", json=body) as r,
    ):
        assert r.status == 200, await r.text()
        answer = await r.json()
    (arrival,) = core.arrivals
    assert arrival.choices == choices and arrival.max_output_tokens == 4 * choices
    if path in ("/v1/chat/completions", "/v1/completions"):
        assert len(answer["choices"]) == choices


async def test_a_named_sessions_stream_of_several_choices_teaches_choice_0s_tool_calls(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    """The second review: a stream of a session the client names was not read choice by choice (nothing is
    chained from it), so the scheduler learned the finish reason and tool names of any choice; now those of
    choice 0, as from a whole answer."""
    tools = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
        for name in ("read_file", "run_tests", "edit_file", "grep")
    ]
    body = {
        "model": "saga-sim",
        "messages": [{"role": "user", "content": "Fix the failing test."}],
        "tools": tools,
        "tool_choice": "required",
        "n": 8,
        "max_tokens": 64,
        "stream": True,
    }
    core = RecordingCore(fleet.urls)
    async with (
        running_proxy(ProxyConfig(replicas=fleet.urls, port=0), core) as url,
        http.post(f"{url}/v1/chat/completions", json=body, headers={"X-Session-ID": "agent-1"}) as r,
    ):
        assert r.status == 200
        raw = await r.text()
    names: dict[int, str] = {}
    for line in raw.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                for call in choice["delta"].get("tool_calls") or ():
                    names.setdefault(choice["index"], call["function"].get("name") or "")
    assert len(set(names.values())) > 1  # (the premise: the choices called different tools)
    (usage,) = core.usages
    assert usage is not None and usage.tool_names == (names[0],)
