"""The asyncio driver: delivery order, simulated clock, aborts, and failing loudly when the engine breaks."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from simulator.cost_model import PROFILES
from simulator.driver import ReplicaDriver
from simulator.engine import Engine, EngineRequest, StepResult


def request(rid: str, max_tokens: int = 5) -> EngineRequest:
    return EngineRequest(
        request_id=rid, prompt_token_ids=list(range(300, 340)), max_tokens=max_tokens, ignore_eos=True
    )


async def test_outputs_arrive_in_order_and_simulated_time_advances_by_steps() -> None:
    seen: list[float] = []
    driver = ReplicaDriver(
        Engine(PROFILES["llama3-8b-h100"]), time_scale=1000.0, on_output=lambda _, t: seen.append(t)
    )
    driver.start()
    try:
        stream = driver.submit(request("a"))
        outputs = [await stream.get() for _ in range(5)]
    finally:
        await driver.stop()
    assert [o.first_token for o in outputs] == [True, False, False, False, False]
    assert outputs[-1].finish_reason == "length" and stream.finished
    assert outputs[-1].usage is not None and outputs[-1].usage.completion_tokens == 5
    assert seen == sorted(seen) and len(seen) == 5
    assert all(b - a >= 0.0076 - 1e-9 for a, b in itertools.pairwise(seen))  # a step each, in sim time
    assert driver.now() >= seen[-1]


async def test_abort_stops_the_request_in_the_engine() -> None:
    engine = Engine(PROFILES["llama3-8b-h100"])
    driver = ReplicaDriver(engine, time_scale=1000.0)
    driver.start()
    try:
        stream = driver.submit(request("long", max_tokens=100_000))
        await stream.get()
        driver.abort("long")
        assert not engine.has_unfinished()
        follow = driver.submit(request("next", max_tokens=2))
        assert (await follow.get()).first_token
    finally:
        await driver.stop()


async def test_a_broken_engine_fails_open_streams_and_refuses_new_requests() -> None:
    class BrokenEngine(Engine):  # a subclass: a compiled Engine's methods cannot be replaced on an instance
        def step(self, now: float) -> StepResult:
            raise RuntimeError("boom")

    engine = BrokenEngine(PROFILES["llama3-8b-h100"])
    driver = ReplicaDriver(engine, time_scale=1000.0)
    driver.start()
    try:
        stream = driver.submit(request("a"))
        with pytest.raises(RuntimeError, match="boom"):
            await asyncio.wait_for(stream.get(), timeout=10)
        with pytest.raises(RuntimeError, match="failed"):
            driver.submit(request("b"))
    finally:
        await driver.stop()


async def test_time_the_host_kept_the_replica_behind_its_clock_is_counted_as_lag() -> None:
    """`saga demo` warns from this figure: a replica starved of CPU no longer runs at the modelled speed."""
    import time

    driver = ReplicaDriver(Engine(PROFILES["llama3-8b-h100"]), time_scale=1.0)  # ~8 ms of wall time a step
    driver.start()
    try:
        stream = driver.submit(request("long", max_tokens=100_000))
        await stream.get()
        before = driver.lag_s
        time.sleep(0.4)  # noqa: ASYNC251 - on purpose: a busy host, the event loop (and the replica) cannot run
        for _ in range(30):  # past what the replica had already queued before the pause
            await stream.get()
        assert driver.lag_s - before >= 0.3
    finally:
        await driver.stop()
