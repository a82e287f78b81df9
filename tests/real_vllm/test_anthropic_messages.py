"""The Anthropic Messages API (`/v1/messages`, what Claude Code speaks) through SAGA in front of a real, stock
vLLM (CPU build, tiny model): answered as vLLM answers it, and the scheduler reads vLLM's own usage and stop
reason out of whole answers and streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from tests.real_vllm.real_vllm import running_vllm
from tests.recording_core import RecordingCore


@pytest.fixture(scope="module")
def replica() -> Iterator[str]:
    with running_vllm(name="messages") as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def test_messages_whole_and_streamed_report_vllms_usage_to_the_scheduler(
    replica: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{replica}/v1/models") as r:
        model = (await r.json())["data"][0]["id"]
    core = RecordingCore([replica], "session-affinity")
    body = {
        "model": model,
        "max_tokens": 5,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with running_proxy(ProxyConfig(replicas=[replica], port=0, access_log=False), core) as url:
        async with http.post(f"{url}/v1/messages", json=body) as r:
            assert r.status == 200
            whole = await r.json()
        async with http.post(f"{url}/v1/messages", json={**body, "stream": True}) as r:
            assert r.status == 200
            events = [
                json.loads(line[6:]) for line in (await r.text()).splitlines() if line.startswith("data: ")
            ]
    assert whole["type"] == "message" and whole["stop_reason"] == "max_tokens"
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["delta"]["stop_reason"] == "max_tokens"
    for usage, reported in zip(core.usages, (whole["usage"], delta["usage"]), strict=True):
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens, usage.finish_reason) == (
            reported["input_tokens"],
            reported["output_tokens"],
            "length",
        )
        assert usage.cached_tokens == reported["cache_read_input_tokens"]
