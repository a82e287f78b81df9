"""Calls asking for `n` choices through SAGA in front of a real, stock vLLM (CPU build, tiny model): vLLM
streams each choice's chunks under its index, interleaved, and the proxy reads each choice on its own, so two
agents given one task, each going on with a choice other than the first, go on in sessions of their own
(before, a stream's choices were read as one message: neither continuation matched an answer, both fell back
to the shared opening and were merged into one session)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from tests.real_vllm.real_vllm import running_vllm


@pytest.fixture(scope="module")
def replica() -> Iterator[str]:
    with running_vllm(name="n-choices") as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def sample(
    http: aiohttp.ClientSession, url: str, model: str, messages: list[dict[str, Any]], seed: int
) -> tuple[str, list[str]]:
    """One streamed call asking for three choices: the session the proxy named and each choice's text."""
    body = {
        "model": model,
        "messages": messages,
        "n": 3,
        "seed": seed,  # (seeds far apart: with seeds 1 and 2 two calls shared choices)
        "max_tokens": 12,
        "ignore_eos": True,
        "stream": True,
    }
    async with http.post(f"{url}/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        session, raw = r.headers["X-Session-ID"], await r.text()
    texts = ["", "", ""]
    for line in raw.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                texts[choice["index"]] += choice["delta"].get("content") or ""
    return session, texts


async def test_agents_going_on_with_another_choice_each_keep_their_session(
    replica: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{replica}/v1/models") as r:
        model = (await r.json())["data"][0]["id"]
    opening = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"}]
    config = ProxyConfig(replicas=[replica], port=0, access_log=False)
    async with running_proxy(config) as url:
        started = await asyncio.gather(*(sample(http, url, model, opening, seed) for seed in (1, 100)))
        texts = [choices for _, choices in started]
        picked = [texts[0][1], texts[1][2]]
        assert len({*texts[0], *texts[1]}) == 6  # (the premise: six messages told apart)
        later = [
            await sample(
                http,
                url,
                model,
                [*opening, {"role": "assistant", "content": said}, {"role": "user", "content": f"go {i}"}],
                seed=200 + 100 * i,
            )
            for i, said in enumerate(picked)
        ]
    sessions = [session for session, _ in started]
    assert sessions[0] != sessions[1]
    assert [session for session, _ in later] == sessions
