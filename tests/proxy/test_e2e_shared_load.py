"""Two proxy workers on one worker directory (as `saga serve --workers 2` runs them, in one process here):
one worker's admission counts the KV the other reserved on their shared replica."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from proxy.scheduler import SchedulerCore, build_policy
from proxy.server import running_proxy
from proxy.worker_set import WorkerSet
from tests.proxy.fakes import FakeReplica, config, fake_replica, session_owned_by

# 1,000 blocks of 16 tokens: 16k tokens of KV, 24k with admission's default overcommit of 1.5
METRICS = 'vllm:cache_config_info{block_size="16",num_gpu_blocks="1000"} 1.0\n'


@pytest.fixture
def directory() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="saga-")  # short: the workers' unix sockets live here
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def replica() -> AsyncIterator[FakeReplica]:
    async with fake_replica("slow", slow_s=3.0, metrics=METRICS) as fake:  # long: a busy host
        yield fake


def saga_core(url: str) -> SchedulerCore:
    return SchedulerCore([url], build_policy("saga", seed=1), time.monotonic)


async def chat(http: aiohttp.ClientSession, url: str, session: str, prompt_chars: int) -> int:
    body = {"model": "fake", "messages": [{"role": "user", "content": "x" * prompt_chars}]}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers={"X-Session-ID": session}) as r:
        await r.read()
        return r.status


async def until(check: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.skipif(
    os.environ.get("SAGA_TEST_SERVER") == "aiohttp",
    reason="workers need server: fast (proxy/config.py refuses workers > 1 under aiohttp)",
)
@pytest.mark.parametrize("shared", [True, False], ids=["one-directory", "apart"])
async def test_a_worker_admits_a_new_workflow_only_into_the_kv_the_other_worker_left(
    http: aiohttp.ClientSession,
    replica: FakeReplica,
    directory: str,
    shared: bool,
) -> None:
    cores = [saga_core(replica.url), saga_core(replica.url)]
    # The control: a second worker whose directory does not hold the first one's table.
    second_dir = directory if shared else tempfile.mkdtemp(prefix="saga-", dir=directory)
    async with (
        running_proxy(config([replica.url]), cores[0], workers=WorkerSet(0, 2, directory)) as first,
        running_proxy(config([replica.url]), cores[1], workers=WorkerSet(1, 2, second_dir)) as second,
    ):
        await until(lambda: all(c.replicas[replica.url].kv_capacity_tokens == 16_000 for c in cores))
        # worker 0's workflow: ~20k tokens reserved while its call is in flight
        big_id, late_id = session_owned_by(0, 2, "big"), session_owned_by(1, 2, "late")
        big = asyncio.create_task(chat(http, first, big_id, 80_000))
        await until(lambda: cores[0].admission.own_reserved(replica.url) > 20_000)  # type: ignore[union-attr]
        held = cores[0].admission.own_reserved(replica.url)  # type: ignore[union-attr]
        view = cores[1].replicas[replica.url]
        if shared:
            await until(lambda: view.foreign_reserved_tokens == held)
            assert view.reserved_tokens == held
        # worker 1's new workflow, ~11k tokens: fits the replica alone, not beside worker 0's
        late = asyncio.create_task(chat(http, second, late_id, 40_000))
        await until(lambda: late_id in cores[1].sessions)
        waited = cores[1].admission.is_waiting(late_id)  # type: ignore[union-attr]
        assert await big == 200
        async with http.post(f"{first}/saga/v1/sessions/{big_id}/end") as r:
            # Its reservation goes: the next sync gives worker 1 the room. Apart, worker 1's app socket
            # is not in worker 0's directory, so the broadcast names it missing (the end stands on 0).
            assert r.status == (200 if shared else 502)
        assert await late == 200
    assert waited is shared
    assert replica.calls == 2
