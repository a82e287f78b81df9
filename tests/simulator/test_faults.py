"""Fault injection on a simulated replica, over loopback: each fault as a client sees it, set and cleared
through the replica's admin API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from simulator.faults import FAULTS
from simulator.server import ReplicaFleet, start_fleet

BODY = {"model": "saga-sim", "messages": [{"role": "user", "content": "hello " * 50}], "max_tokens": 12}


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(1, time_scale=200.0)
    yield fleet
    await fleet.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def set_fault(http: aiohttp.ClientSession, url: str, **fault: Any) -> dict[str, Any]:
    async with http.post(f"{url}/saga/v1/faults", json=fault) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 200, body
        return body


async def clear(http: aiohttp.ClientSession, url: str) -> None:
    async with http.delete(f"{url}/saga/v1/faults") as r:
        assert r.status == 200
        assert (await r.json())["fault"]["kind"] == "none"


async def chat(http: aiohttp.ClientSession, url: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{url}/v1/chat/completions", json={**BODY, **extra}) as r:
        return r.status, await r.json()


async def test_error_fault_answers_the_status_with_a_vllm_error_and_clears(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.urls[0]
    await set_fault(http, url, kind="error", status=500)
    status, body = await chat(http, url)
    assert status == 500 and "injected fault" in body["error"]["message"]
    async with http.get(f"{url}/metrics") as r:
        assert r.status == 200  # the control surface is never affected
    await clear(http, url)
    status, body = await chat(http, url)
    assert status == 200 and body["choices"][0]["message"]["content"]


async def test_crash_refuses_connections_then_listens_again(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.urls[0]
    await set_fault(http, url, kind="crash", duration_s=0.5)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as fresh, fresh.get(f"{url}/health") as r:
            await r.read()
    for _ in range(100):  # back within the duration plus scheduling slack
        await asyncio.sleep(0.05)
        try:
            async with aiohttp.ClientSession() as fresh, fresh.get(f"{url}/health") as r:
                if r.status == 200:
                    break
        except aiohttp.ClientConnectionError:
            continue
    else:
        pytest.fail("the crashed replica never listened again")
    status, _ = await chat(http, url)
    assert status == 200


async def test_crash_cuts_a_stream_in_flight(fleet: ReplicaFleet, http: aiohttp.ClientSession) -> None:
    url = fleet.urls[0]
    fleet.replicas[0].driver.set_time_scale(5.0)  # slow enough that the stream is still open
    body = {**BODY, "stream": True, "max_tokens": 400, "ignore_eos": True}
    async with http.post(f"{url}/v1/chat/completions", json=body) as r:
        assert r.status == 200
        await r.content.readline()
        await set_fault(http, url, kind="crash", duration_s=5.0)
        with pytest.raises(aiohttp.ClientPayloadError):
            async for _ in r.content:
                pass


async def test_hang_accepts_and_never_answers_until_cleared(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.urls[0]
    await set_fault(http, url, kind="hang")
    pending = asyncio.create_task(chat(http, url))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await asyncio.shield(pending)
    assert not pending.done()
    await clear(http, url)
    status, body = await asyncio.wait_for(pending, 30)
    assert status == 200 and body["usage"]["completion_tokens"] > 0


async def test_die_mid_stream_cuts_after_the_given_events(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.urls[0]
    await set_fault(http, url, kind="die_mid_stream", after_chunks=3)
    events: list[bytes] = []
    body = {**BODY, "stream": True, "max_tokens": 30, "ignore_eos": True}
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{url}/v1/chat/completions", json=body) as r:
            assert r.status == 200
            async for line in r.content:
                if line.startswith(b"data:"):
                    events.append(line)
    assert 1 <= len(events) <= 4  # the role chunk and three content events at most, never [DONE]
    assert all(b"[DONE]" not in e for e in events)


async def test_die_mid_stream_cuts_a_whole_answer_in_half(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.urls[0]
    await set_fault(http, url, kind="die_mid_stream")
    with pytest.raises(aiohttp.ClientPayloadError):
        await chat(http, url)


async def test_slow_fault_slows_the_engine_and_restores_it(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.urls[0]
    driver = fleet.replicas[0].driver
    await set_fault(http, url, kind="slow", factor=20)
    assert driver.time_scale == pytest.approx(200.0 / 20)
    status, _ = await chat(http, url)
    assert status == 200  # slower, still correct
    await clear(http, url)
    assert driver.time_scale == pytest.approx(200.0)


async def test_flap_health_alternates_by_period(fleet: ReplicaFleet, http: aiohttp.ClientSession) -> None:
    url = fleet.urls[0]
    faults = _controller(fleet)
    now = [1000.0]
    faults.clock = lambda: now[0]
    await set_fault(http, url, kind="flap_health", period_s=10)
    seen = []
    for t in (0.0, 5.0, 10.5, 15.0, 21.0):
        now[0] = 1000.0 + t
        async with http.get(f"{url}/health") as r:
            seen.append(r.status)
    assert seen == [503, 503, 200, 200, 503]
    status, _ = await chat(http, url)
    assert status == 200  # inference keeps working while health flaps


async def test_faults_expire_by_themselves(fleet: ReplicaFleet, http: aiohttp.ClientSession) -> None:
    url = fleet.urls[0]
    await set_fault(http, url, kind="error", duration_s=0.2)
    for _ in range(200):
        await asyncio.sleep(0.05)
        async with http.get(f"{url}/saga/v1/faults") as r:
            if (await r.json())["fault"]["kind"] == "none":
                break
    else:
        pytest.fail("the fault never expired")
    status, _ = await chat(http, url)
    assert status == 200


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "crash"},
        {"kind": "explode"},
        {"kind": "error", "status": 200},
        {"kind": "slow", "factor": 0.5},
        {"kind": "error", "duration_s": -1},
        {"kind": "hang", "surprise": 1},
    ],
)
async def test_bad_faults_are_refused(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, fault: dict[str, Any]
) -> None:
    async with http.post(f"{fleet.urls[0]}/saga/v1/faults", json=fault) as r:
        assert r.status == 400
        assert "bad fault" in (await r.json())["error"]["message"]
    async with http.get(f"{fleet.urls[0]}/saga/v1/faults") as r:
        assert (await r.json())["fault"]["kind"] == "none"


def _controller(fleet: ReplicaFleet) -> Any:
    runner = fleet._runners[0]
    return runner.app[FAULTS]


def _held_calls(fleet: ReplicaFleet) -> list[str]:
    server = fleet._runners[0].server
    assert server is not None
    requests = [connection._current_request for connection in server.connections]
    return [r.path for r in requests if r is not None and r.path == "/v1/chat/completions"]


async def test_a_call_held_by_a_hang_and_cut_by_a_crash_logs_no_error(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A call whose body had not all arrived, held by `hang`, is cut by the `crash` that replaces it: the
    handler resumes on a closed connection (aiohttp's body read raised RuntimeError, logged as a server
    error with its traceback, seen in soaks)."""
    caplog.set_level(logging.WARNING)
    url = fleet.urls[0]
    await set_fault(http, url, kind="hang")
    address = urlsplit(url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"model"'
    )
    await writer.drain()
    for _ in range(1000):  # a bounded wait for its handler to wait on the hang
        if _held_calls(fleet):
            break
        await asyncio.sleep(0.01)
    assert _held_calls(fleet)
    await set_fault(http, url, kind="crash", duration_s=0.3)
    assert await asyncio.wait_for(reader.read(), 10) == b""  # cut, no answer
    writer.close()
    await asyncio.sleep(0.5)  # the crash ends; the replica listens again
    status, _ = await chat(http, url)
    assert status == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
