"""What a health probe reads from a replica is bounded (proxy/health.py `MAX_PROBE_BYTES`): an endless
`/metrics` or `/v1/models` is read as no figures, not into memory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from proxy import health
from tests.proxy.fakes import serving

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
