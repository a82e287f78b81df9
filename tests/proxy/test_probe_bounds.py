"""What a health probe reads from a replica is bounded (proxy/health.py `MAX_PROBE_BYTES`): an endless
`/metrics` or `/v1/models` is read as no figures, not into memory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from proxy import health
from proxy.context import Guards
from proxy.replica_guard import GuardParams
from proxy.scheduler import ReplicaStats, SchedulerCore, build_policy
from proxy.server import running_proxy
from tests.proxy.fakes import config, serving

METRICS = b'vllm:num_requests_waiting{engine="0"} 3.0\nvllm:num_requests_running{engine="0"} 2.0\n'
MODELS = b'{"object": "list", "data": [{"id": "m", "object": "model"}]}'


@pytest.fixture
async def replica() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    bodies = {"/metrics": METRICS, "/v1/models": MODELS}

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.path == "/health":
            return web.Response()
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(64 if bodies.get("huge") else 1):  # 64 x the body: past a small limit
            await response.write(bodies[request.path] + b" " * 1024 * 16)
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with serving(app) as url:
        yield url, bodies


async def test_a_probe_reads_figures_and_models_within_the_bound(
    replica: tuple[str, dict[str, bytes]],
) -> None:
    url, _ = replica
    async with aiohttp.ClientSession() as http:
        stats = await health.probe(http, url, 5.0)
        models = await health.models_of(http, url, 5.0)
    assert (stats.healthy, stats.waiting, stats.running) == (True, 3, 2)
    assert models == frozenset({"m"})


async def test_past_the_bound_a_replica_publishes_nothing_but_stays_healthy(
    replica: tuple[str, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = replica
    bodies["huge"] = b"1"
    monkeypatch.setattr(health, "MAX_PROBE_BYTES", 256 * 1024)  # 64 x 16 KiB = 1 MiB sent
    async with aiohttp.ClientSession() as http:
        stats = await health.probe(http, url, 5.0)
        models = await health.models_of(http, url, 5.0)
    assert (stats.healthy, stats.waiting, stats.running) == (True, None, None)
    assert models is None


HUGE_CAPACITY = b'vllm:cache_config_info{num_gpu_blocks="' + b"9" * 400 + b'",block_size="16"} 1\n'


@pytest.mark.parametrize(
    ("page", "read"),
    [
        (b"vllm:num_requests_waiting NaN\nvllm:num_requests_running 2\n", {"waiting": None, "running": 2}),
        (b"vllm:num_requests_waiting 3\nvllm:num_requests_running +Inf\n", {"waiting": 3, "running": None}),
        (b"vllm:num_requests_waiting -3\nvllm:num_requests_running 2\n", {"waiting": None, "running": 2}),
        (b"vllm:kv_cache_usage_perc NaN\nvllm:num_requests_waiting 3\n", {"kv_usage": None, "waiting": 3}),
        (HUGE_CAPACITY, {"kv_capacity_tokens": None}),
    ],
)
async def test_a_figure_that_is_no_count_is_unknown_and_the_replica_stays_healthy(
    replica: tuple[str, dict[str, bytes]], page: bytes, read: dict[str, int | None]
) -> None:
    """NaN, infinite or negative request counts, a NaN KV usage, a KV capacity past any float: the probe
    raised for the first two and the last (ValueError, OverflowError), which ended the health loop."""
    url, bodies = replica
    bodies["/metrics"] = page
    async with aiohttp.ClientSession() as http:
        stats = await health.probe(http, url, 5.0)
    assert stats.healthy is True
    assert {field: getattr(stats, field) for field in read} == read


async def test_the_health_loop_outlives_a_probe_that_raises(
    replica: tuple[str, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A defect in one replica's probe counts as that probe failing; the loop goes on probing them all."""
    url, _ = replica
    broken = "http://127.0.0.1:9"
    probe = health.probe

    async def probe_or_fail(
        session: aiohttp.ClientSession, replica_id: str, timeout_s: float
    ) -> ReplicaStats:
        if replica_id == broken:
            raise RuntimeError("a defect in the probe")
        return await probe(session, replica_id, timeout_s)

    monkeypatch.setattr(health, "probe", probe_or_fail)
    core = SchedulerCore([url, broken], build_policy("round-robin"), lambda: 0.0)
    guards = Guards(GuardParams(unhealthy_after=1))
    rounds = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        loop = asyncio.create_task(
            health.replica_health_loop(core, http, lambda _: None, 0.01, guards, 5.0, None, rounds)
        )
        try:
            await asyncio.wait_for(rounds.wait(), 10)
            rounds.clear()
            await asyncio.wait_for(rounds.wait(), 10)  # a second round: the loop is still going
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
    assert (core.replicas[url].healthy, core.replicas[url].waiting) == (True, 3)
    assert core.replicas[broken].healthy is False


DEEP = b'{"data": [{"id": "m", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"


async def test_a_models_list_nested_past_msgspecs_depth_is_no_list(
    replica: tuple[str, dict[str, bytes]],
) -> None:
    """msgspec raises RecursionError there; it escaped `models_of` and the health loop's gather, which ended
    the loop, so no replica was probed again."""
    url, bodies = replica
    bodies["/v1/models"] = DEEP
    async with aiohttp.ClientSession() as http:
        assert await health.models_of(http, url, 5.0) is None


@pytest.mark.parametrize(
    "listed",
    [
        b"[1, 2]",
        b'{"data": null}',
        b'{"data": "m"}',
        b'{"data": [1, {"id": 5}, {"name": "x"}]}',
        DEEP,
        b"{",
        b"huge",
    ],
    ids=["list", "null", "string", "entries-without-ids", "deep", "not-json", "past-the-bound"],
)
async def test_one_replicas_broken_models_list_leaves_the_others_in_v1_models(
    listed: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`GET /v1/models` is the union of the replicas' lists; one replica answering JSON of another shape,
    JSON nested past msgspec's depth or more than the probe bound answered a 500 (or was read whole into
    memory)."""
    monkeypatch.setattr(health, "MAX_PROBE_BYTES", 64 * 1024)
    good_entry = b'{"id": "good", "object": "model", "owned_by": "vllm", "max_model_len": 4096}'

    def app_listing(models: bytes) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            if request.path != "/v1/models":
                return web.Response()
            return web.Response(body=b"[" * 70_000 if models == b"huge" else models)

        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        return app

    async with (
        serving(app_listing(b'{"object": "list", "data": [' + good_entry + b"]}")) as good,
        serving(app_listing(listed)) as bad,
        running_proxy(config([good, bad], access_log=False)) as url,
        aiohttp.ClientSession() as http,
        http.get(f"{url}/v1/models") as r,
    ):
        assert r.status == 200
        assert json.loads(await r.read()) == {"object": "list", "data": [json.loads(good_entry)]}
