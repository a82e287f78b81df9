"""vllm-router 0.1.17 (a peer router: loadtests/bench/peers.py) before four simulated replicas, end to end.

`cache_aware` and `kv_aware` (fed by the replicas' ZMQ KV events, with session affinity) keep each multi-turn
session (X-Session-ID) on one replica, so later turns hit its prefix cache. kv_aware must learn where a prefix
lives from the events alone: a session's first turn is sent straight to a replica, bypassing the router, and
its next turn, sent through the router without a session header, must land on that replica.

The router does not pass the replicas' `X-Replica` header through, so the replica that served a call is the
one whose finished-request count moved (calls are sequential).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from simulator.server import ReplicaFleet, start_fleet
from tests.processes import free_ports

pytest.importorskip(
    "vllm_router", reason="vllm-router is not installed (pip install vllm-router==0.1.17, in the test extra)"
)

TIME_SCALE = 100.0
SESSIONS = 4
TURNS = 4
START_TIMEOUT_S = 60.0  # the router, and its subscribers, come up within this
CALL_TIMEOUT = aiohttp.ClientTimeout(total=30)
MODEL = "saga-sim"


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(SESSIONS, time_scale=TIME_SCALE, kv_events_endpoint="tcp://127.0.0.1:*")
    yield fleet
    await fleet.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=CALL_TIMEOUT) as session:
        yield session


def log_text(log: Path) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))  # without terminal colours


@contextlib.asynccontextmanager
async def vllm_router(log: Path, worker_urls: list[str], *args: str) -> AsyncIterator[str]:
    """Run `python -m vllm_router.launch_router` on free ports until the block exits; yields its URL."""
    port, metrics_port = free_ports(2)
    cmd = [
        sys.executable,
        "-m",
        "vllm_router.launch_router",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--prometheus-port",
        str(metrics_port),  # default 29000 would clash between instances
        "--worker-urls",
        *worker_urls,
        "--log-level",
        "debug",
        *args,
    ]
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as probe:
            while True:
                assert proc.returncode is None, f"vllm-router exited:\n{log_text(log)[-3000:]}"
                assert time.monotonic() < deadline, f"vllm-router not up:\n{log_text(log)[-3000:]}"
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with probe.get(f"{url}/health") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.1)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class Session:
    """One agent conversation: a distinct system prompt, then user turns growing the context."""

    def __init__(self, index: int) -> None:
        self.id = f"session-{index}"
        self.messages: list[dict[str, str]] = [
            {"role": "system", "content": f"You are coding agent {index}. " + f"Repository r{index}. " * 60}
        ]

    async def call(
        self, http: aiohttp.ClientSession, fleet: ReplicaFleet, url: str, *, header: bool = True
    ) -> tuple[int, int]:
        """Send the next turn to `url`; returns (index of the replica that served it, cached tokens)."""
        turn = len(self.messages) // 2
        self.messages.append({"role": "user", "content": f"Step {turn}: run the tests again. " * 12})
        body = {"model": MODEL, "messages": self.messages, "max_tokens": 8, "ignore_eos": True}
        before = [r.engine.stats().num_finished_total for r in fleet.replicas]
        headers = {"X-Session-ID": self.id} if header else {}
        async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status == 200, await r.text()
            out: dict[str, Any] = await r.json()
        self.messages.append({"role": "assistant", "content": out["choices"][0]["message"]["content"]})
        served = [i for i, r in enumerate(fleet.replicas) if r.engine.stats().num_finished_total != before[i]]
        assert len(served) == 1
        return served[0], out["usage"]["prompt_tokens_details"]["cached_tokens"]


async def converse(
    http: aiohttp.ClientSession, fleet: ReplicaFleet, url: str, sessions: list[Session], turns: int
) -> dict[str, list[tuple[int, int]]]:
    """`turns` turns of every session through `url`, interleaved turn by turn."""
    calls: dict[str, list[tuple[int, int]]] = {s.id: [] for s in sessions}
    for _ in range(turns):
        for s in sessions:
            calls[s.id].append(await s.call(http, fleet, url))
    return calls


def assert_sticky_and_cached(calls: dict[str, list[tuple[int, int]]], skip_first: bool = True) -> None:
    for session_id, turns in calls.items():
        assert len({replica for replica, _ in turns}) == 1, f"{session_id} moved: {turns}"
        later = turns[1:] if skip_first else turns
        assert all(cached > 0 for _, cached in later), f"{session_id} missed the prefix cache: {turns}"


async def test_cache_aware_keeps_each_session_on_one_replica(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with vllm_router(tmp_path / "router.log", fleet.urls, "--policy", "cache_aware") as url:
        calls = await converse(http, fleet, url, [Session(i) for i in range(SESSIONS)], TURNS)
    assert_sticky_and_cached(calls)


async def test_kv_aware_routes_on_the_replicas_kv_events_and_keeps_sessions(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    sources: list[str] = []
    for url, replica in zip(fleet.urls, fleet.replicas, strict=True):
        assert replica.kv_publisher is not None
        sources += ["--kv-event-source", f"{url}={replica.kv_publisher.endpoint}"]
    log = tmp_path / "router.log"
    args = [
        "--policy",
        "kv_aware",
        "--kv-aware-session-affinity-ttl-secs",
        "60",
        "--kv-event-block-size",
        str(fleet.replicas[0].engine.block_size),
        "--kv-event-model",
        MODEL,
        *sources,
    ]
    async with vllm_router(log, fleet.urls, *args) as url:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(r.kv_publisher is not None and r.kv_publisher.has_subscriber() for r in fleet.replicas):
            assert time.monotonic() < deadline, "vllm-router did not subscribe to every replica's KV events"
            await asyncio.sleep(0.05)

        # first turns go straight to replica i: the router hears of them only through replica i's events
        sessions = [Session(i) for i in range(SESSIONS)]
        for i, s in enumerate(sessions):
            assert await s.call(http, fleet, fleet.urls[i]) == (i, 0)
        # the router logs each batch it has taken in; wait for the last one of every replica
        for worker, replica in zip(fleet.urls, fleet.replicas, strict=True):
            assert replica.kv_publisher is not None
            last = f"live sequence advanced source={worker} rank=0 seq={replica.kv_publisher.num_batches - 1}"
            while last not in log_text(log):
                assert time.monotonic() < deadline, f"vllm-router never applied {worker}'s KV events"
                await asyncio.sleep(0.05)

        # the second turn, with no session header, goes where its prefix is cached
        for i, s in enumerate(sessions):
            replica, cached = await s.call(http, fleet, url, header=False)
            assert (replica, cached > 0) == (i, True), f"{s.id}: turn 2 on sim-{replica}, {cached} cached"

        calls = await converse(http, fleet, url, sessions, TURNS - 2)
    assert_sticky_and_cached(calls, skip_first=False)
    assert {turns[0][0] for turns in calls.values()} == set(range(SESSIONS))
