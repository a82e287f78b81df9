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
