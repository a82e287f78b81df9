"""Each replica fault, end to end over loopback (issue 16): a proxy in this process with short timeouts in
front of three simulated replicas, one of which is given the fault through its admin API.

For every kind: the calls it touches are retried on another replica or fail with a clear OpenAI-style error
(no client waits past a bound far above the configured timeouts: a hang detector, not a speed assertion); a
session bound to the faulty replica moves to a healthy one and keeps working once the fault is over; and the
proxy's in-flight accounting returns to zero and its asyncio task count to its baseline.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.reliability.rig import Rig, is_openai_error, rig, stream_ok_or_clear_error, task_count

TASK_SLACK = 2  # a fault's own expiry timer, a probe in progress when we count


async def baseline(r: Rig) -> int:
    await r.settled()
    await asyncio.sleep(0.2)
    return task_count()


async def ends_clean(r: Rig, tasks_before: int) -> None:
    state = await r.settled()
    assert state["in_flight"] == 0
    assert all(v["in_flight"] == 0 for v in state["replicas"])

    async def tasks_back() -> bool:
        return task_count() <= tasks_before + TASK_SLACK

    if not await r.until(tasks_back):
        names = sorted(str(t.get_coro()) for t in asyncio.all_tasks())
        raise AssertionError(f"{task_count()} asyncio tasks, {tasks_before} before the fault: {names}")


def served_or_clear(status: int, payload: dict[str, Any]) -> bool:
    if status == 200:
        return "choices" in payload or "events" in payload
    return status >= 400 and is_openai_error(payload)


async def healthy(r: Rig, replica: str, want: bool) -> bool:
    return bool((await r.replica_views())[replica]["healthy"] == want)


@pytest.mark.parametrize("status", [500, 503])
async def test_error_answers_are_retried_on_another_replica(status: int) -> None:
    async with rig() as r:
        bad = r.fleet.urls[0]
        session = await r.session_on(bad)
        before = await baseline(r)
        await r.set_fault(bad, kind="error", status=status)
        code, payload, where = await r.chat(session)
        assert (code, where != bad) == (200, True) and payload["choices"]
        for _ in range(3):  # the session now lives elsewhere and keeps working
            code, _, where = await r.chat(session)
            assert (code, where != bad) == (200, True)
        await r.clear_fault(bad)
        code, _, _ = await r.chat(session)
        assert code == 200
        await ends_clean(r, before)


async def test_crash_is_retried_and_the_session_rebinds() -> None:
    async with rig() as r:
        bad = r.fleet.urls[0]
        session = await r.session_on(bad)
        before = await baseline(r)
        await r.set_fault(bad, kind="crash", duration_s=3.0)
        for stream in (False, True, False):
            code, payload, where = await r.chat(session, stream=stream)
            assert code == 200 and where != bad
            if stream:
                assert payload["events"][-1] == "[DONE]"
        assert await r.until(lambda: healthy(r, bad, True))  # back after the crash ends
        code, _, _ = await r.chat(session)
        assert code == 200
        await ends_clean(r, before)


async def test_a_hanging_replica_times_out_then_is_avoided() -> None:
    async with rig() as r:
        bad = r.fleet.urls[0]
        session = await r.session_on(bad)
        before = await baseline(r)
        await r.set_fault(bad, kind="hang", duration_s=20.0)
        code, payload, _ = await r.chat(session)  # may reach the replica before its probe fails
        assert served_or_clear(code, payload)
        if code != 200:
            assert (code, payload["error"]["code"]) == (504, "upstream_timeout")
        assert await r.until(lambda: healthy(r, bad, False))  # its health probe hangs past health_timeout_s
        for stream in (False, True):
            code, payload, where = await r.chat(session, stream=stream)
            assert code == 200 and where != bad
        others = await asyncio.gather(*(r.chat(f"other-{i}") for i in range(6)))
        assert all(code == 200 and where != bad for code, _, where in others)
        await r.clear_fault(bad)
        assert await r.until(lambda: healthy(r, bad, True))
        code, _, _ = await r.chat(session)
        assert code == 200
        await ends_clean(r, before)


async def test_death_mid_stream_ends_with_an_error_event_and_the_breaker_moves_the_session() -> None:
    async with rig() as r:
        bad = r.fleet.urls[0]
        session = await r.session_on(bad)
        before = await baseline(r)
        await r.set_fault(bad, kind="die_mid_stream", after_chunks=2)
        places = []
        for _ in range(4):  # breaker_failures=2: at most two calls die before the breaker opens
            code, payload, where = await r.chat(session, stream=True, max_tokens=16)
            assert code == 200 and stream_ok_or_clear_error(payload["events"])
            places.append((where, payload["events"][-1] == "[DONE]"))
        assert places[-1][0] != bad and places[-1][1]  # moved to a healthy replica and served
        assert any(where == bad and not done for where, done in places)  # the fault did bite
        code, payload, where = await r.chat(session)  # a whole answer on the new replica
        assert code == 200 and where != bad
        await r.clear_fault(bad)
        code, _, _ = await r.chat(session, stream=True)
        assert code == 200
        await ends_clean(r, before)


async def test_death_mid_body_of_a_whole_answer_is_not_a_hang() -> None:
    async with rig() as r:
        bad = r.fleet.urls[0]
        session = await r.session_on(bad)
        before = await baseline(r)
        await r.set_fault(bad, kind="die_mid_stream")
        outcomes = []
        for _ in range(4):
            try:
                code, payload, where = await r.chat(session)
                outcomes.append((code, where))
                assert served_or_clear(code, payload)
            except Exception as e:  # a cut body after a 200 status line: the client sees a broken payload
                assert not isinstance(e, TimeoutError), "a client hung"
                outcomes.append((-1, bad))
        assert outcomes[-1][0] == 200 and outcomes[-1][1] != bad
        await r.clear_fault(bad)
        await ends_clean(r, before)


async def test_a_slow_replica_still_answers_or_times_out_clearly() -> None:
    async with rig() as r:
        bad = r.fleet.urls[0]
        session = await r.session_on(bad)
        before = await baseline(r)
        await r.set_fault(bad, kind="slow", factor=20.0, duration_s=10.0)
        results = await asyncio.gather(
            r.chat(session), r.chat(session, stream=True), *(r.chat(f"slow-other-{i}") for i in range(4))
        )
        assert all(served_or_clear(code, payload) for code, payload, _ in results)
        await r.clear_fault(bad)
        code, _, _ = await r.chat(session)
        assert code == 200
        await ends_clean(r, before)


async def test_flapping_health_never_fails_a_call() -> None:
    async with rig() as r:
        bad = r.fleet.urls[0]
        session = await r.session_on(bad)
        before = await baseline(r)
        await r.set_fault(bad, kind="flap_health", period_s=0.4)
        for i in range(8):
            code, _, _ = await r.chat(session, stream=bool(i % 2))
            assert code == 200  # inference still works wherever the session lands
            await asyncio.sleep(0.1)
        await r.clear_fault(bad)
        assert await r.until(lambda: healthy(r, bad, True))
        code, _, _ = await r.chat(session)
        assert code == 200
        await ends_clean(r, before)


async def test_every_replica_down_is_a_clear_error_not_a_hang() -> None:
    async with rig(replicas=2) as r:
        before = await baseline(r)
        for url in r.fleet.urls:
            await r.set_fault(url, kind="error", status=503)
        code, payload, _ = await r.chat("doomed")
        assert code == 503 and is_openai_error(payload)
        for url in r.fleet.urls:
            await r.set_fault(url, kind="crash", duration_s=2.0)
        code, payload, _ = await r.chat("doomed")
        assert code in (502, 503) and is_openai_error(payload)
        assert await r.until(lambda: healthy(r, r.fleet.urls[0], True))
        code, _, _ = await r.chat("doomed")
        assert code == 200
        await ends_clean(r, before)
