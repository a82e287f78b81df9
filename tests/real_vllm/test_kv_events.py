"""A real vLLM server (CPU build) publishing its KV-cache events over ZMQ, and SAGA subscribed to them: the
proxy finds the publisher by asking the server (`GET /kv_event_sources`), the events name the session the
proxy sends (`X-Session-ID`), so the proxy knows exactly how many tokens of each session's context the server
caches, follows it as the conversation grows, and drops it when the server's prefix cache is reset."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from proxy.kv_event_sources import parse_sources
from proxy.server import running_proxy
from tests.real_vllm.real_vllm import _free_port, running_vllm, subscribing_proxy

CPU_BLOCK_SIZE = 128  # vLLM's block size on the CPU backend
WAIT_S = 20.0


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    port = _free_port()
    events = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{port}"}
    with running_vllm(
        ["--served-model-name", "tiny", "--kv-events-config", json.dumps(events)], name="kv-events"
    ) as url:
        yield url, port


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def _resident(http: aiohttp.ClientSession, url: str, session: str) -> dict[str, int] | None:
    async with http.get(f"{url}/saga/v1/sessions") as r:
        for s in (await r.json())["sessions"]:
            if s["session_id"] == session:
                resident: dict[str, int] = s["kv_resident"]
                return resident
    return None


async def _until(
    http: aiohttp.ClientSession, url: str, session: str, check: Callable[[dict[str, int]], bool]
) -> dict[str, int]:
    resident: dict[str, int] | None = None
    for _ in range(int(WAIT_S / 0.1)):
        resident = await _resident(http, url, session)
        if resident is not None and check(resident):
            return resident
        await asyncio.sleep(0.1)
    raise AssertionError(f"{session}: {resident}")


async def _chat(
    http: aiohttp.ClientSession, url: str, messages: list[dict[str, str]], session: str = "agent-1"
) -> dict[str, Any]:
    body = {"model": "tiny", "messages": messages, "max_tokens": 6, "temperature": 0}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers={"X-Session-ID": session}) as r:
        assert r.status == 200, await r.text()
        answer: dict[str, Any] = await r.json()
        return answer


async def _subscribed(http: aiohttp.ClientSession, url: str) -> None:
    """A SUB socket sees only what is published after its subscription reached the publisher: warm-up calls
    (each a new prompt, so that it stores blocks) until the proxy has received a batch."""
    for attempt in range(int(WAIT_S / 0.5)):
        await _chat(http, url, [{"role": "user", "content": f"warm-up {attempt} " * 80}], "warm-up")
        async with http.get(f"{url}/saga/v1/replicas") as r:
            (row,) = (await r.json())["replicas"]
        if row["kv_events"] is not None and row["kv_events"]["batches"]:  # None: not subscribed yet
            return
        await asyncio.sleep(0.5)
    raise AssertionError("the proxy received no KV events from the server")


def _cached(usage: dict[str, Any]) -> int:
    """Full blocks of what the server computed: the prompt and every answer token but the last."""
    return (usage["prompt_tokens"] + usage["completion_tokens"] - 1) // CPU_BLOCK_SIZE * CPU_BLOCK_SIZE


async def test_the_servers_kv_event_sources_read_as_the_proxy_reads_them(
    server: tuple[str, int], http: aiohttp.ClientSession
) -> None:
    """vLLM 0.32's answer: data-parallel rank (a JSON key) -> that rank's KVEventsConfig, the endpoint as
    configured (its wildcard host kept, its port offset by the rank: none for rank 0)."""
    replica, port = server
    async with http.get(f"{replica}/kv_event_sources") as r:
        assert r.status == 200
        body = await r.read()
    answer = json.loads(body)
    assert list(answer) == ["0"]
    assert answer["0"]["endpoint"] == f"tcp://*:{port}"
    assert answer["0"]["enable_kv_cache_events"] is True and answer["0"]["publisher"] == "zmq"
    assert parse_sources(body, replica) == {0: f"tcp://127.0.0.1:{port}"}


async def test_the_proxy_follows_a_sessions_kv_on_a_real_vllm(
    server: tuple[str, int], http: aiohttp.ClientSession
) -> None:
    replica, port = server
    async with http.post(f"{replica}/reset_prefix_cache") as r:
        assert r.status == 200
    config = subscribing_proxy(replica)
    async with running_proxy(config) as url:
        await _subscribed(http, url)
        messages = [{"role": "user", "content": "Refactor the parser module. " * 40}]
        first = await _chat(http, url, messages)
        held = _cached(first["usage"])
        assert held >= CPU_BLOCK_SIZE
        assert await _until(http, url, "agent-1", lambda r: bool(r)) == {replica: held}
        messages += [
            {"role": "assistant", "content": first["choices"][0]["message"]["content"] or "ok"},
            {"role": "user", "content": "Now run the tests and fix what fails. " * 40},
        ]
        second = await _chat(http, url, messages)
        assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 0  # it went on from the first
        grown = _cached(second["usage"])
        assert grown > held
        assert await _until(http, url, "agent-1", lambda r: r.get(replica) == grown) == {replica: grown}
        async with http.get(f"{url}/saga/v1/replicas") as r:
            (row,) = (await r.json())["replicas"]
        assert row["kv_events"]["source"] == "kv_event_sources"
        assert row["kv_events"]["ranks"]["0"]["endpoint"] == f"tcp://127.0.0.1:{port}"
        assert row["kv_events"]["gaps"] == 0 and row["kv_events"]["skipped_events"] == 0
        async with http.post(f"{replica}/reset_prefix_cache") as r:
            assert r.status == 200
        # vLLM publishes a step's events with its next step: another agent's call
        other = await _chat(http, url, [{"role": "user", "content": "List the files. " * 60}], "agent-2")
        assert await _until(http, url, "agent-2", lambda r: bool(r)) == {replica: _cached(other["usage"])}
        assert await _resident(http, url, "agent-1") == {}  # the cache was cleared: nothing of it is left
