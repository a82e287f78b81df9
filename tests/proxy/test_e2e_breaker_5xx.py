"""End-to-end over loopback: a replica's 5xx before any byte counts toward its circuit breaker only once
another replica answered the same call without a 5xx (proxy/call_attempts.py). Before, every 5xx counted at
once, so a request every replica refuses (one that crashes the engine), sent `breaker_failures` times in a
row or in one concurrent burst, opened every replica's breaker and every other client got 503s for the
cooldown."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
from aiohttp import web

from proxy.server import running_proxy
from tests.proxy.fakes import OK_JSON, config, fake_replica, replica_app, serving
from tests.proxy.test_e2e_error_counts import counts
from tests.proxy.test_e2e_failures import call, replica_view

SERVERS = pytest.mark.parametrize("server", ["fast", "aiohttp"])
POISON = {"metadata": {"poison": True}}  # tests/proxy/fakes.py: every FakeReplica answers it 500


async def in_flight(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/saga/v1/state") as r:
        found: int = (await r.json())["in_flight"]
    return found


@SERVERS
async def test_poison_calls_in_a_row_and_in_a_burst_take_no_replica_out(
    http: aiohttp.ClientSession, server: str
) -> None:
    cfg = config([], breaker_failures=3, server=server)
    cfg.health_interval_s = 30.0  # no probe brings a replica back during the test
    async with fake_replica() as a, fake_replica() as b:
        cfg.replicas = [a.url, b.url]
        async with running_proxy(cfg) as url:
            for i in range(4):  # more in a row than the breaker's count
                status, payload, _ = await call(http, url, f"poison-{i}", **POISON)
                assert status == 500 and payload["error"]["message"] == "engine error on this request"
            after_row = [await replica_view(http, url, r) for r in (a.url, b.url)]
            burst = await asyncio.gather(
                *(call(http, url, f"burst-{i}", **POISON) for i in range(6)),
                *(call(http, url, f"other-{i}") for i in range(6)),
            )
            after_burst = [await replica_view(http, url, r) for r in (a.url, b.url)]
            later = [(await call(http, url, f"later-{i}"))[0] for i in range(4)]
            seen = await counts(http, url)
    assert all(v["healthy"] and v["breaker"] == "closed" for v in after_row), after_row
    assert [status for status, _, _ in burst] == [500] * 6 + [200] * 6
    assert all(v["healthy"] and v["breaker"] == "closed" for v in after_burst), after_burst
    assert later == [200] * 4
    # each of the 10 poison calls was tried on both replicas, and every failed attempt is still counted
    assert a.calls + b.calls == 10 * 2 + 10
    poisoned = {(a.url, "upstream_5xx"): 10.0, (b.url, "upstream_5xx"): 10.0}
    assert seen["saga_upstream_failures_total"] == poisoned
    assert seen["saga_errors_total"] == {("upstream_5xx",): 10.0}


@SERVERS
async def test_a_replica_that_fails_what_another_answers_still_opens_its_breaker(
    http: aiohttp.ClientSession, server: str
) -> None:
    cfg = config([], policy="round-robin", breaker_failures=3, breaker_cooldown_s=3600, server=server)
    cfg.health_interval_s = 30.0
    async with fake_replica("error-503") as bad, fake_replica() as good:
        cfg.replicas = [bad.url, good.url]
        async with running_proxy(cfg) as url:
            breakers: list[tuple[int, str]] = []
            for i in range(40):  # round robin: every other call starts on the bad replica
                status, _, replica = await call(http, url, f"s{i}")
                assert (status, replica) == (200, good.url)
                breakers.append((bad.calls, (await replica_view(http, url, bad.url))["breaker"]))
                if bad.calls >= 3:
                    break
            view = await replica_view(http, url, bad.url)
            calls = bad.calls
            results = [await call(http, url, f"t{i}") for i in range(4)]
    assert {breaker for n, breaker in breakers if n < 3} == {"closed"}
    assert breakers[-1] == (3, "open") and not view["healthy"]
    assert {(status, replica) for status, _, replica in results} == {(200, good.url)}
    assert bad.calls == calls


@SERVERS
async def test_a_single_replica_relays_its_5xx_and_stays_in(http: aiohttp.ClientSession, server: str) -> None:
    """With one replica there is no other answer to compare with: its 5xx is relayed and never opens its
    breaker (it has nowhere else to send calls anyway)."""
    cfg = config([], breaker_failures=1, server=server)
    cfg.health_interval_s = 30.0
    async with fake_replica("error-503") as only:
        cfg.replicas = [only.url]
        async with running_proxy(cfg) as url:
            answers = [await call(http, url, f"s{i}") for i in range(3)]
            view = await replica_view(http, url, only.url)
            only.mode = "ok"
            status, _, _ = await call(http, url, "after")
    overloaded = (503, {"error": {"message": "overloaded"}})
    assert [(status, payload) for status, payload, _ in answers] == [overloaded] * 3
    assert view["healthy"] and view["breaker"] == "closed"
    assert status == 200 and only.calls == 4


@SERVERS
async def test_a_call_its_client_leaves_between_attempts_counts_its_5xx_for_nothing(
    http: aiohttp.ClientSession, server: str
) -> None:
    """The first attempt gets a 500, the second hangs and the client hangs up: no replica answered the call
    without a 5xx, so the 500 counts toward no breaker (here one failure would open it)."""
    attempts = 0
    hung, release = asyncio.Event(), asyncio.Event()

    async def chat(request: web.Request) -> web.Response:
        nonlocal attempts
        await request.read()
        attempts += 1
        if attempts == 1:
            return web.json_response({"error": {"message": "engine error on this request"}}, status=500)
        hung.set()
        await release.wait()
        return web.Response(body=OK_JSON, content_type="application/json")

    app = replica_app(chat)  # both replicas: whichever is tried first answers 500
    try:
        async with serving(app) as a, serving(app) as b:
            cfg = config([a, b], breaker_failures=1, server=server)
            cfg.health_interval_s = 30.0
            async with running_proxy(cfg) as url:
                waiting = asyncio.create_task(call(http, url, "leaves"))
                await asyncio.wait_for(hung.wait(), 30)
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
                for _ in range(200):  # a bounded wait for the proxy to see the hang-up
                    if await in_flight(http, url) == 0:
                        break
                    await asyncio.sleep(0.05)
                left = await in_flight(http, url)
                views = [await replica_view(http, url, r) for r in (a, b)]
                release.set()
                attempts = 1  # the next call waits for `release`, set: answered at once
                status, _, _ = await call(http, url, "next")
    finally:
        release.set()
    assert left == 0
    assert all(v["healthy"] and v["breaker"] == "closed" for v in views), views
    assert status == 200
