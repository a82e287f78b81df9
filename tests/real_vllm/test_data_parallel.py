"""A real vLLM server (CPU build) running two data-parallel ranks, each its own engine and prefix cache, with
KV events on: SAGA finds both ranks' publishers by asking the server (`GET /kv_event_sources`), follows
each, and sends a session's later calls to the rank that caches it (`X-data-parallel-rank`). Straight to
vLLM, its own balancing sends a session's next call to the other rank and nothing of it is cached there."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from proxy.kv_event_sources import parse_sources
from proxy.server import running_proxy
from tests.real_vllm.real_vllm import _free_port, running_vllm, subscribing_proxy

CPU_BLOCK_SIZE = 128  # vLLM's block size on the CPU backend
SESSIONS = 6
WAIT_S = 30.0


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    port = _free_port()
    while port + 1 > 65535:  # rank 1 publishes on the next port
        port = _free_port()
    events = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{port}"}
    args = ["--served-model-name", "tiny", "--kv-events-config", json.dumps(events)]
    args += ["--data-parallel-size", "2"]
    # data parallelism runs each rank's engine in a process of its own
    with running_vllm(args, extra_env={"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}, name="data-parallel") as url:
        yield url, port


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def _chat(http: aiohttp.ClientSession, url: str, messages: list[dict[str, str]], session: str) -> Any:
    body = {"model": "tiny", "messages": messages, "max_tokens": 4, "temperature": 0}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers={"X-Session-ID": session}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def _second_calls_cached(
    http: aiohttp.ClientSession, url: str, name: str, proxied: bool
) -> list[tuple[int, int]]:
    """For each of SESSIONS sessions, one call and then its continuation, one after the other; per session
    the full blocks the first call left cached and the tokens the second found cached."""
    out = []
    for s in range(SESSIONS):
        messages = [{"role": "user", "content": f"{name} {s}: refactor the parser module. " * 40}]
        first = await _chat(http, url, messages, f"{name}-{s}")
        usage = first["usage"]
        blocks = (usage["prompt_tokens"] + usage["completion_tokens"] - 1) // CPU_BLOCK_SIZE * CPU_BLOCK_SIZE
        messages += [
            {"role": "assistant", "content": first["choices"][0]["message"]["content"] or "ok"},
            {"role": "user", "content": "go on"},
        ]
        if proxied:
            await _until_resident(http, url, f"{name}-{s}")
        second = await _chat(http, url, messages, f"{name}-{s}")
        cached = (second["usage"].get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        out.append((blocks, cached))
    return out


async def _until_resident(http: aiohttp.ClientSession, url: str, session: str) -> None:
    """vLLM publishes a step's events with its next step: wait until the proxy has seen the session's
    blocks."""
    for _ in range(int(WAIT_S / 0.1)):
        async with http.get(f"{url}/saga/v1/sessions") as r:
            for row in (await r.json())["sessions"]:
                if row["session_id"] == session and row["kv_resident"]:
                    return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the proxy never saw {session}'s blocks")


async def test_both_ranks_are_found_and_a_sessions_calls_go_to_the_rank_caching_it(
    server: tuple[str, int], http: aiohttp.ClientSession
) -> None:
    replica, port = server
    async with http.get(f"{replica}/kv_event_sources") as r:
        body = await r.read()
    assert parse_sources(body, replica) == {0: f"tcp://127.0.0.1:{port}", 1: f"tcp://127.0.0.1:{port + 1}"}

    # Straight to vLLM: its balancing spreads calls over the ranks, a session's continuation included.
    direct = await _second_calls_cached(http, replica, "direct", proxied=False)
    assert any(cached == 0 for _, cached in direct), direct

    async with running_proxy(subscribing_proxy(replica)) as url:
        # subscribed to both ranks once each has published a batch (warm-up calls land on both)
        for attempt in range(int(WAIT_S / 0.5)):
            warm_up = [{"role": "user", "content": f"warm-up {attempt} " * 80}]
            await _chat(http, url, warm_up, f"warm-{attempt}")
            async with http.get(f"{url}/saga/v1/replicas") as r:
                (row,) = (await r.json())["replicas"]
            events = row["kv_events"]
            if events is not None and all(rank["batches"] for rank in events["ranks"].values()):
                assert sorted(events["ranks"]) == ["0", "1"] and events["source"] == "kv_event_sources"
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"not subscribed to both ranks: {row}")
        through = await _second_calls_cached(http, url, "through", proxied=True)
    # the figures docs/results/kv-events/README.md quotes (pytest -s shows them)
    print(f"(full blocks of the first call, tokens the continuation found cached): direct {direct}")
    print(f"through SAGA {through}")
    # Through SAGA every continuation finds all its first call's full blocks on its rank.
    assert all(blocks >= CPU_BLOCK_SIZE and cached == blocks for blocks, cached in through), through
