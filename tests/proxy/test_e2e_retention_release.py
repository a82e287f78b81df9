"""End-to-end: a retention the policy gives up when its call ends (the session went quiet) is released on
the replica (`POST /saga/v1/release`) instead of held to its TTL; a replica without the retention contract
loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from proxy.config import ProxyConfig
from proxy.metrics import ProxyMetrics
from proxy.retention_release import RetentionReleaser
from proxy.scheduler import PolicySpec
from proxy.scheduler.framework import Retention
from proxy.scheduler.plugin_spec import PLUGIN_TYPES
from proxy.scheduler.registry import PluginSpec
from proxy.scheduler.types import ReplicaId, RequestInfo, Usage
from proxy.server import running_proxy
from simulator.server import start_fleet
from tests.proxy.fakes import serving


class _Hold(Retention):
    """Asks for a long retention after every call; gives it up when the call ends if `release` says so."""

    type_name = "test-hold-retention"
    release = False

    def retain_ttl_s(self, req: RequestInfo, replica_id: ReplicaId) -> float | None:
        return 600.0

    def release_after(self, req: RequestInfo, replica_id: ReplicaId, usage: Usage) -> bool:
        return self.release


class _HoldThenRelease(_Hold):
    type_name = "test-hold-then-release-retention"
    release = True


@pytest.fixture
def test_plugins() -> Iterator[None]:
    for cls in (_Hold, _HoldThenRelease):
        PLUGIN_TYPES[cls.type_name] = cls
    yield
    for cls in (_Hold, _HoldThenRelease):
        del PLUGIN_TYPES[cls.type_name]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def _retained_sessions(http: aiohttp.ClientSession, replica: str) -> list[str]:
    async with http.get(f"{replica}/saga/v1/retained") as r:
        assert r.status == 200
        return [s["session_id"] for s in (await r.json())["sessions"]]


def _config(replicas: list[str], retention: str) -> ProxyConfig:
    """The proxy in front of `replicas` with session affinity and the test `retention` plugin."""
    policy = PolicySpec(
        picker=PluginSpec("max-score-picker"),
        scorers=[PluginSpec("session-affinity-scorer")],
        retention=PluginSpec(retention),
    )
    return ProxyConfig(replicas=replicas, port=0, seed=1, health_interval_s=0.2, policy=policy)


def _samples(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text scrape, by name."""
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            found[name] = float(value)
    return found


@pytest.mark.parametrize("retention", [_Hold.type_name, _HoldThenRelease.type_name])
async def test_a_retention_given_up_at_the_end_of_its_call_is_released_on_the_replica(
    http: aiohttp.ClientSession, test_plugins: None, retention: str
) -> None:
    fleet = await start_fleet(1, time_scale=200.0)
    try:
        async with running_proxy(_config(fleet.urls, retention)) as url:
            body = {
                "model": "saga-sim",
                "messages": [{"role": "user", "content": "hi " * 200}],
                "max_tokens": 4,
            }
            async with http.post(
                f"{url}/v1/chat/completions", json=body, headers={"X-Session-ID": "s-1"}
            ) as r:
                assert r.status == 200, await r.text()
            held = await _retained_sessions(http, fleet.urls[0])
            for _ in range(100):  # the release goes out in the background, after the answer
                if retention == _Hold.type_name or not held:
                    break
                await asyncio.sleep(0.05)
                held = await _retained_sessions(http, fleet.urls[0])
            assert held == ([] if retention == _HoldThenRelease.type_name else ["s-1"])
            released = retention == _HoldThenRelease.type_name
            async with http.get(f"{url}/metrics") as r:
                assert r.status == 200
                scraped = _samples(await r.text())
            assert scraped["saga_retention_releases_sent_total"] == (1.0 if released else 0.0)
            assert scraped["saga_retention_releases_failed_total"] == 0.0
            assert scraped["saga_retention_releases_dropped_total"] == 0.0
            assert scraped["saga_retention_releases_pending"] == 0.0
    finally:
        await fleet.close()


@pytest.mark.parametrize("end", ["header", "admin"])
async def test_a_session_ended_gives_up_its_retention_on_the_replica(
    http: aiohttp.ClientSession, test_plugins: None, end: str
) -> None:
    """Ending a session (`X-Session-End` on its last call, or the admin route) forgot it and kept the KV its
    last call asked the replica to keep until the TTL ran out (the learned tool gap, up to 300 s), ranked with
    its workflow: newer work on that replica waited 6.9 s behind ended sessions (the fifth review)."""
    fleet = await start_fleet(1, time_scale=200.0)
    try:
        async with running_proxy(_config(fleet.urls, _Hold.type_name)) as url:
            body = {
                "model": "saga-sim",
                "messages": [{"role": "user", "content": "hi " * 200}],
                "max_tokens": 4,
            }
            for last in (False, True):
                headers = {"X-Session-ID": "s-1"}
                if last and end == "header":
                    headers["X-Session-End"] = "true"
                async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                    assert r.status == 200, await r.text()
            if end == "admin":
                assert await _retained_sessions(http, fleet.urls[0]) == ["s-1"]  # not ended yet: kept
                async with http.post(f"{url}/saga/v1/sessions/s-1/end") as r:
                    assert r.status == 200, await r.text()
            held = await _retained_sessions(http, fleet.urls[0])
            for _ in range(100):  # the release goes out in the background
                if not held:
                    break
                await asyncio.sleep(0.05)
                held = await _retained_sessions(http, fleet.urls[0])
            assert held == []
            async with http.get(f"{url}/metrics") as r:
                assert _samples(await r.text())["saga_retention_releases_sent_total"] == 1.0
    finally:
        await fleet.close()


async def test_a_release_answer_past_the_bound_is_not_read_and_counts_as_failed() -> None:
    """The release's answer was read whole, whatever its size, within the 2 s timeout."""

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(1024):  # 64 MiB, unless the reader stops first
            await response.write(b" " * 65536)
        return response

    app = web.Application()
    app.router.add_post("/saga/v1/release", endless)
    async with serving(app) as url, aiohttp.ClientSession() as session:
        releaser = RetentionReleaser(session, upstream_api_key=None)
        releaser.release([("s-1", url)])
        await asyncio.gather(*releaser.pending)
    assert (releaser.sent, releaser.failed) == (1, 1)


async def test_a_replica_without_the_contract_or_gone_only_counts_a_failed_release() -> None:
    # a replica with no /saga/v1/release: 404
    async with serving(web.Application()) as url, aiohttp.ClientSession() as session:
        releaser = RetentionReleaser(session, upstream_api_key=None)
        releaser.release([("s-1", url), ("s-2", "http://127.0.0.1:9")])
        await asyncio.gather(*releaser.pending)
        assert (releaser.sent, releaser.failed, releaser.dropped) == (2, 2, 0)
        assert not releaser.pending
        metrics = ProxyMetrics()
        metrics.releaser = releaser
        scraped = _samples(generate_latest(metrics.registry).decode())
        assert scraped["saga_retention_releases_sent_total"] == 2.0
        assert scraped["saga_retention_releases_failed_total"] == 2.0
