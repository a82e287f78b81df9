"""The proxy over loopback in front of simulated vLLM replicas: routing, caching, errors, faults."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from simulator.server import ReplicaFleet, start_fleet

TIME_SCALE = 200.0  # simulated GPU time runs 200x faster: calls take milliseconds


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(4, time_scale=TIME_SCALE)
    yield fleet
    await fleet.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def config(replicas: list[str], policy: str) -> ProxyConfig:
    return ProxyConfig(replicas=replicas, policy=policy, port=0, seed=1, health_interval_s=0.2)


def dead_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def conversation(turns: int) -> list[dict[str, str]]:
    messages = [
        {"role": "system", "content": "You are a coding agent. " + "Tools: edit, shell, test. " * 60},
        {"role": "user", "content": "Fix the failing test in module alpha. " * 20},
    ]
    for i in range(turns - 1):
        messages.append({"role": "assistant", "content": f"Calling run_tests, attempt {i}."})
        messages.append({"role": "tool", "content": f"[run_tests] 3 failed, 12 passed, log {i} " * 30})
    return messages


async def chat(
    http: aiohttp.ClientSession, url: str, session: str, turns: int, **extra: Any
) -> tuple[int, dict[str, Any], str]:
    body = {"model": "saga-sim", "messages": conversation(turns), "max_tokens": 8, **extra}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers={"X-Session-ID": session}) as r:
        return r.status, await r.json(), r.headers.get("X-Saga-Replica", "")


async def test_session_affinity_second_call_hits_the_prefix_cache(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    async with running_proxy(config(fleet.urls, "session-affinity")) as url:
        status1, first, replica1 = await chat(http, url, "agent-1", turns=1)
        status2, second, replica2 = await chat(http, url, "agent-1", turns=2)
    assert (status1, status2) == (200, 200)
    assert replica1 == replica2 and replica1 in fleet.urls
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


async def test_round_robin_scatters_one_session_over_all_replicas(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    async with running_proxy(config(fleet.urls, "round-robin")) as url:
        replicas = [(await chat(http, url, "agent-1", turns=t))[2] for t in range(1, 5)]
    assert sorted(replicas) == sorted(fleet.urls)


async def test_streaming_is_relayed_intact(fleet: ReplicaFleet, http: aiohttp.ClientSession) -> None:
    body = {
        "model": "saga-sim",
        "messages": conversation(1),
        "max_tokens": 12,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with running_proxy(config(fleet.urls[:1], "round-robin")) as url:
        warm_up = {**body, "stream": False, "stream_options": None}
        async with http.post(f"{url}/v1/chat/completions", json=warm_up) as r:
            assert r.status == 200
        async with http.post(f"{url}/v1/chat/completions", json=body) as r:
            assert r.status == 200 and r.content_type == "text/event-stream"
            raw = await r.read()
        async with http.post(f"{fleet.urls[0]}/v1/chat/completions", json=body) as r:
            direct = await r.read()
    events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [msgspec.json.decode(e) for e in events[:-1]]
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["prompt_tokens_details"]["cached_tokens"] > 0  # the warm-up cached it on this replica

    def text(stream: bytes) -> str:
        lines = [ln[6:] for ln in stream.decode().splitlines() if ln.startswith("data: {")]
        choices = [c for e in lines for c in msgspec.json.decode(e)["choices"]]
        return "".join(c["delta"].get("content") or "" for c in choices)

    assert text(raw) == text(direct) != ""


@pytest.mark.parametrize(
    ("method", "path", "data", "status"),
    [
        ("POST", "/v1/chat/completions", b"{not json", 400),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400),
        ("POST", "/v1/chat/completions", b'{"stream": "yes"}', 400),
        ("POST", "/v1/completions", b"", 400),
        ("GET", "/v1/chat/completions", b"", 405),
        ("POST", "/v1/nothing-here", b"{}", 404),
    ],
)
async def test_bad_input_gets_an_openai_error(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, method: str, path: str, data: bytes, status: int
) -> None:
    async with (
        running_proxy(config(fleet.urls, "round-robin")) as url,
        http.request(method, url + path, data=data) as r,
    ):
        assert r.status == status
        error = (await r.json())["error"]
        allow = r.headers.get("Allow")
    assert error["message"] and error["type"]
    assert (allow is not None) == (status == 405)  # a 405 names the methods the route takes
    assert allow is None or "POST" in allow


async def test_replica_errors_are_relayed_unchanged(fleet: ReplicaFleet, http: aiohttp.ClientSession) -> None:
    body = {"model": "saga-sim", "messages": conversation(1), "n": 0}  # the replica refuses it, as vLLM does
    async with (
        running_proxy(config(fleet.urls, "round-robin")) as url,
        http.post(f"{url}/v1/chat/completions", json=body) as r,
    ):
        status, payload = r.status, await r.json()
    assert status == 400 and payload["error"]["message"] == "n must be at least 1, got 0."


async def test_a_dead_replica_loses_no_request(fleet: ReplicaFleet, http: aiohttp.ClientSession) -> None:
    async with running_proxy(config([dead_url(), fleet.urls[0]], "round-robin")) as url:
        results = await asyncio.gather(*(chat(http, url, f"s{i}", turns=1) for i in range(8)))
    assert [status for status, _, _ in results] == [200] * 8
    assert {replica for _, _, replica in results} == {fleet.urls[0]}


async def test_no_live_replica_is_a_503_with_an_openai_error(http: aiohttp.ClientSession) -> None:
    async with running_proxy(config([dead_url(), dead_url()], "session-affinity")) as url:
        status, payload, _ = await chat(http, url, "s", turns=1)
        async with http.get(f"{url}/health") as r:
            health_status = r.status
    assert status == 503 and payload["error"]["type"] == "service_unavailable"
    assert health_status == 503


async def test_health_and_models(fleet: ReplicaFleet, http: aiohttp.ClientSession) -> None:
    async with running_proxy(config(fleet.urls, "round-robin")) as url:
        async with http.get(f"{url}/health") as r:
            assert r.status == 200
            assert (await r.json())["healthy_replicas"] == 4
        async with http.get(f"{url}/v1/models") as r:
            models = await r.json()
    assert [m["id"] for m in models["data"]] == ["saga-sim"]


async def test_client_gone_mid_stream_frees_its_slot(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    body = {"model": "saga-sim", "messages": conversation(1), "max_tokens": 5000, "ignore_eos": True}
    async with running_proxy(config(fleet.urls, "round-robin")) as url:
        async with http.post(f"{url}/v1/chat/completions", json={**body, "stream": True}) as r:
            await r.content.readline()  # the stream has started; now hang up
        for _ in range(200):  # bounded wait for the proxy to notice, not a timing assertion
            async with http.get(f"{url}/saga/v1/state") as s:
                state = await s.json()
            if state["in_flight"] == 0:
                break
            await asyncio.sleep(0.05)
    assert state["in_flight"] == 0
    assert all(r["in_flight"] == 0 for r in state["replicas"])
