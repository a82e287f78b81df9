"""End-to-end over loopback: the scheduler core's housekeeping (`tick`) runs on its own cadence
(proxy/housekeeping.py), not once per health round: a workflow waiting for KV is admitted as soon as the hold
of the workflow in its way lapses, with health rounds a minute apart."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import msgspec
import pytest

from proxy.config import ProxyConfig
from proxy.housekeeping import LAPSES_PER_STEP, MIN_WALL_S, housekeeping_interval_s, housekeeping_loop
from proxy.scheduler import PRESETS, Decision, Reject, SchedulerCore, build_policy
from proxy.server import running_proxy
from tests.proxy.fakes import fake_replica
from tests.proxy.test_e2e_shared_load import METRICS, chat, until


async def test_a_waiting_workflow_is_admitted_when_a_hold_lapses_between_health_rounds(
    http: aiohttp.ClientSession,
) -> None:
    saga = PRESETS["saga"]
    assert saga.admission is not None
    # holds between calls last at most 3 s, so the first workflow's lapses long before the next health round
    admission_spec = msgspec.structs.replace(saga.admission, max_hold_s=3.0, overcommit=1.0)
    policy = msgspec.structs.replace(saga, admission=admission_spec)
    async with fake_replica("ok", metrics=METRICS) as replica:  # 16k tokens of KV, all of it to admission
        core = SchedulerCore([replica.url], build_policy(policy, seed=1), time.monotonic)
        admission = core.admission
        assert admission is not None
        config = ProxyConfig(replicas=[replica.url], port=0, seed=1, health_interval_s=60.0)
        async with running_proxy(config, core) as url:
            await until(lambda: core.replicas[replica.url].kv_capacity_tokens == 16_000)
            assert await chat(http, url, "first", 2_000) == 200
            # back within its hold, longer: its agent type holds between calls from now on
            assert await chat(http, url, "first", 8_000) == 200
            assert admission.own_reserved(replica.url) > 0  # held after its call, for up to 3 s
            # ~15k tokens at the scale learned from the two calls (a prompt the replica takes): no room beside
            # the hold, the whole replica once it lapses; the next health round is ~60 s away, past the
            # client's timeout
            second = asyncio.create_task(chat(http, url, "second", 70_000))
            await until(lambda: len(admission.waiting) == 1)
            async with asyncio.timeout(20):
                assert await second == 200
            assert len(admission.waiting) == 0


async def test_the_queue_route_lists_the_calls_waiting_for_admission(http: aiohttp.ClientSession) -> None:
    """`GET /saga/v1/queue` counted the calls waiting in the proxy but listed only those in flight: nothing
    said whose call waited, for which tenant, or since when."""
    saga = PRESETS["saga"]
    assert saga.admission is not None
    admission_spec = msgspec.structs.replace(saga.admission, max_hold_s=30.0, overcommit=1.0)
    policy = msgspec.structs.replace(saga, admission=admission_spec)
    async with fake_replica("ok", metrics=METRICS) as replica:
        core = SchedulerCore([replica.url], build_policy(policy, seed=1), time.monotonic)
        config = ProxyConfig(replicas=[replica.url], port=0, seed=1, health_interval_s=60.0)
        async with running_proxy(config, core) as url:
            await until(lambda: core.replicas[replica.url].kv_capacity_tokens == 16_000)
            assert await chat(http, url, "first", 2_000) == 200
            assert await chat(http, url, "first", 8_000) == 200  # back, longer: held after its call
            second = asyncio.create_task(chat(http, url, "second", 70_000))
            await until(lambda: core.admission is not None and len(core.admission.waiting) == 1)
            async with http.get(f"{url}/saga/v1/queue") as r:
                listing = await r.json()
            async with http.get(f"{url}/metrics") as r:
                exported = await r.text()
            second.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await second
    (waiting,) = listing["waiting"]
    assert waiting["session_id"] == "second" and waiting["where"] == "admission" and waiting["age_s"] >= 0
    # counted where an operator's dashboards look (an operator's review: `saga_queue_depth` said 0 while
    # calls waited for admission, the release queue's alone)
    assert (listing["queued"], listing["admission_waiting"]) == (1, 1)
    assert "saga_queue_depth 1.0" in exported and "saga_admission_waiting 1.0" in exported
    assert "saga_admitted_total 1.0" in exported and 'saga_admission_reserved_tokens{replica="' in exported


async def test_a_failing_tick_is_logged_and_housekeeping_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Core:
        ticks = 0

        def tick(self, lapse_limit: int = 0) -> list[Decision]:
            self.ticks += 1
            if self.ticks == 2:
                raise RuntimeError("a bug")
            return [Reject("r", f"tick {self.ticks}")]

        def ticking(self) -> bool:
            return False

    core, applied = Core(), []
    loop = asyncio.create_task(housekeeping_loop(core, applied.extend, interval_s=0.001))  # type: ignore[arg-type]
    await until(lambda: core.ticks >= 4)
    loop.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop
    assert [d.reason for d in applied if isinstance(d, Reject)][:3] == ["tick 1", "tick 3", "tick 4"]
    assert "housekeeping (tick) failed" in caplog.text


async def test_a_tick_goes_on_in_steps_with_the_loops_other_work_between_them() -> None:
    """One tick's lapses no longer hold the event loop at once (8-12 ms at ~20,000 new sessions a second):
    after `tick(LAPSES_PER_STEP)` the loop lets what is ready run before each `tick_more` step."""
    events: list[str] = []

    class Core:
        steps = 0
        limits: list[int] = []

        def tick(self, lapse_limit: int = 0) -> list[Decision]:
            self.limits.append(lapse_limit)
            if self.steps == 0 and not events:
                self.steps = 3
                asyncio.get_running_loop().call_soon(events.append, "a call")
            events.append("tick")
            return [Reject("r", "tick")]

        def ticking(self) -> bool:
            return self.steps > 0

        def tick_more(self, lapse_limit: int) -> list[Decision]:
            self.limits.append(lapse_limit)
            self.steps -= 1
            events.append("step")
            return [Reject("r", "step")]

    core, applied = Core(), []
    loop = asyncio.create_task(housekeeping_loop(core, applied.extend, interval_s=0.001))  # type: ignore[arg-type]
    await until(lambda: events.count("tick") >= 2)
    loop.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop
    assert events[:6] == ["tick", "a call", "step", "step", "step", "tick"]
    assert [d.reason for d in applied if isinstance(d, Reject)][:4] == ["tick", "step", "step", "step"]
    assert set(core.limits) == {LAPSES_PER_STEP}


def test_the_interval_is_a_second_of_the_cores_clock_and_never_a_spin() -> None:
    assert housekeeping_interval_s(1.0) == 1.0
    assert housekeeping_interval_s(4.0) == 0.25  # the demo's replicas run 4x the wall clock
    assert housekeeping_interval_s(1e12) == MIN_WALL_S
