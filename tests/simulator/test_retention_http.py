"""The KV-retention HTTP contract (docs/retention-api.md) on a simulated replica over loopback."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from simulator.retention import MAX_SESSION_ID_CHARS
from simulator.server import ReplicaFleet, start_fleet

# tiny-cpu: 32 blocks of 128 tokens, so a handful of prompts evicts everything; retention cap 16 blocks.
# Simulated time runs only 10x faster than the wall clock, so TTLs of minutes cannot run out mid-test.
TIME_SCALE = 10.0


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(1, time_scale=TIME_SCALE, profile="tiny-cpu")
    yield fleet
    await fleet.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def tokens(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(256, 8000) for _ in range(n)]


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, **kw: Any
) -> tuple[int, Any]:
    data = None if body is None else msgspec.json.encode(body)
    async with http.request(method, url, data=data, **kw) as r:
        return r.status, await r.json(content_type=None)


async def complete(
    http: aiohttp.ClientSession, base: str, prompt: list[int], **fields: Any
) -> tuple[int, Any]:
    headers = fields.pop("headers", {})
    body = {"prompt": prompt, "max_tokens": 8, "ignore_eos": True, **fields}
    return await call(http, "POST", f"{base}/v1/completions", body, headers=headers)


def cached(response: Any) -> int:
    return int(response["usage"]["prompt_tokens_details"]["cached_tokens"])


async def test_a_retained_session_keeps_its_prefix_through_a_flood_and_is_listed(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    base = fleet.urls[0]
    retained, plain = tokens(1000, 1), tokens(1000, 2)
    status, _ = await complete(
        http, base, retained, headers={"X-Session-ID": "agent-1"}, vllm_xargs={"saga_retain_ttl_s": 300}
    )
    assert status == 200
    status, _ = await complete(http, base, plain, headers={"X-Session-ID": "agent-2"})
    assert status == 200

    status, listing = await call(http, "GET", f"{base}/saga/v1/retained")
    assert status == 200
    assert (listing["num_blocks"], listing["max_blocks"], listing["max_ttl_s"]) == (7, 16, 600.0)
    (session,) = listing["sessions"]
    assert (session["session_id"], session["num_blocks"], session["num_tokens"]) == ("agent-1", 7, 896)
    assert session["expires_at"] == session["retained_at"] + 300.0
    assert 0.0 < session["ttl_left_s"] <= 300.0
    async with http.get(f"{base}/metrics") as r:
        metrics = await r.text()
    assert 'saga:retained_blocks{engine="0",model_name="saga-sim"} 7.0' in metrics
    assert 'saga:retained_sessions{engine="0",model_name="saga-sim"} 1.0' in metrics

    for i in range(6):  # 6 x 12 blocks of other traffic through a 32-block cache
        status, _ = await complete(http, base, tokens(1500, 100 + i))
        assert status == 200
    _, again = await complete(http, base, retained + tokens(200, 3), headers={"X-Session-ID": "agent-1"})
    _, evicted = await complete(http, base, plain + tokens(200, 4), headers={"X-Session-ID": "agent-2"})
    assert cached(again) == 896  # the 7 full blocks of the first turn (1000 prompt + 7 computed output)
    assert cached(evicted) == 0
    status, listing = await call(http, "GET", f"{base}/saga/v1/retained")
    assert listing["sessions"] == []  # the next turn took the blocks over and asked for no retention


async def test_session_ids_come_from_the_header_the_body_or_vllm_xargs(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    base = fleet.urls[0]
    xargs = {"saga_retain_ttl_s": 60}
    await complete(http, base, tokens(300, 1), session_id="body", vllm_xargs=xargs)
    await complete(http, base, tokens(300, 2), vllm_xargs={**xargs, "session_id": "xargs"})
    await complete(
        http, base, tokens(300, 3), headers={"X-Session-ID": "header"}, session_id="x", vllm_xargs=xargs
    )
    _, listing = await call(http, "GET", f"{base}/saga/v1/retained")
    assert [s["session_id"] for s in listing["sessions"]] == ["body", "xargs", "header"]


async def test_retain_extends_with_a_capped_ttl_and_release_drops(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    base = fleet.urls[0]
    await complete(http, base, tokens(1000, 1), session_id="s", vllm_xargs={"saga_retain_ttl_s": 5})

    status, info = await call(http, "POST", f"{base}/saga/v1/retain", {"session_id": "s", "ttl_s": 1e6})
    assert status == 200
    assert info["ttl_clamped"] is True and info["ttl_left_s"] == 600.0
    assert info["expires_at"] == info["retained_at"] + 600.0
    status, info = await call(http, "POST", f"{base}/saga/v1/retain", {"session_id": "s", "ttl_s": 120})
    assert (status, info["ttl_left_s"], info["ttl_clamped"]) == (200, 120.0, False)

    status, error = await call(http, "POST", f"{base}/saga/v1/retain", {"session_id": "nope", "ttl_s": 9})
    assert status == 404 and "nope" in error["error"]["message"]
    status, error = await call(http, "POST", f"{base}/saga/v1/retain", {"session_id": "s", "ttl_s": 0})
    assert status == 400 and "positive" in error["error"]["message"]
    status, _ = await call(http, "POST", f"{base}/saga/v1/retain", {"session_id": "s"})
    assert status == 400

    status, released = await call(http, "POST", f"{base}/saga/v1/release", {"session_id": "s"})
    assert (status, released) == (200, {"session_id": "s", "released": True, "num_blocks": 7})
    status, released = await call(http, "POST", f"{base}/saga/v1/release", {"session_id": "s"})
    assert (status, released["released"], released["num_blocks"]) == (200, False, 0)
    _, listing = await call(http, "GET", f"{base}/saga/v1/retained")
    assert listing["sessions"] == [] and listing["num_blocks"] == 0
    assert fleet.replicas[0].engine.pool.num_free == fleet.replicas[0].engine.pool.num_blocks


async def test_bad_retention_requests_answer_400(fleet: ReplicaFleet, http: aiohttp.ClientSession) -> None:
    base = fleet.urls[0]
    status, error = await complete(http, base, tokens(64, 1), vllm_xargs={"saga_retain_ttl_s": 30})
    assert status == 400 and "session id" in error["error"]["message"]
    status, error = await complete(
        http, base, tokens(64, 1), session_id="s", vllm_xargs={"saga_retain_ttl_s": "soon"}
    )
    assert status == 400 and "saga_retain_ttl_s" in error["error"]["message"]
    status, error = await complete(
        http, base, tokens(64, 1), session_id="s", vllm_xargs={"saga_retain_ttl_s": -1}
    )
    assert status == 400 and "saga_retain_ttl_s" in error["error"]["message"]


async def _priorities_refused(http: aiohttp.ClientSession, base: str, bad: tuple[object, ...]) -> None:
    """Each of `bad` as a generation request's `saga_retain_priority` answers 400 naming the field."""
    for priority in bad:
        status, error = await complete(
            http,
            base,
            tokens(64, 1),
            session_id="s",
            vllm_xargs={"saga_retain_ttl_s": 30, "saga_retain_priority": priority},
        )
        assert status == 400 and "saga_retain_priority" in error["error"]["message"]


async def test_integers_past_float_or_int64_range_answer_400_not_500(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    # a TTL integer past float's range raised OverflowError (a 500); a priority past signed 64 bits is one
    # the vLLM plugin's engine client cannot carry, so both refuse it alike
    base = fleet.urls[0]
    status, error = await complete(
        http, base, tokens(64, 1), session_id="s", vllm_xargs={"saga_retain_ttl_s": 10**400}
    )
    assert status == 400 and "saga_retain_ttl_s" in error["error"]["message"]
    await _priorities_refused(http, base, (2**63, -(2**63) - 1, 10**30))
    status, _ = await complete(
        http,
        base,
        tokens(300, 3),
        session_id="edge",
        vllm_xargs={"saga_retain_ttl_s": 30, "saga_retain_priority": 2**63 - 1},
    )
    assert status == 200
    status, error = await call(
        http, "POST", f"{base}/saga/v1/retain", {"session_id": "edge", "ttl_s": 30, "priority": 2**63}
    )
    assert status == 400 and "priority" in error["error"]["message"]
    status, info = await call(
        http, "POST", f"{base}/saga/v1/retain", {"session_id": "edge", "ttl_s": 30, "priority": -(2**63)}
    )
    assert (status, info["priority"]) == (200, -(2**63))


async def test_the_retention_priority_comes_from_xargs_or_the_request_and_retain_can_change_it(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    base = fleet.urls[0]
    await complete(
        http, base, tokens(300, 1), session_id="own", priority=2, vllm_xargs={"saga_retain_ttl_s": 60}
    )
    await complete(
        http,
        base,
        tokens(300, 2),
        session_id="set",
        priority=2,
        vllm_xargs={"saga_retain_ttl_s": 60, "saga_retain_priority": "-3"},
    )
    _, listing = await call(http, "GET", f"{base}/saga/v1/retained")
    assert {s["session_id"]: s["priority"] for s in listing["sessions"]} == {"own": 2, "set": -3}
    status, info = await call(
        http, "POST", f"{base}/saga/v1/retain", {"session_id": "own", "ttl_s": 30, "priority": -7}
    )
    assert (status, info["priority"]) == (200, -7)
    status, info = await call(http, "POST", f"{base}/saga/v1/retain", {"session_id": "own", "ttl_s": 30})
    assert (status, info["priority"]) == (200, -7)  # kept when not given
    await _priorities_refused(http, base, ("high", 1.5, True))
    status, _ = await call(
        http, "POST", f"{base}/saga/v1/retain", {"session_id": "own", "ttl_s": 30, "priority": "x"}
    )
    assert status == 400


async def test_a_session_id_past_the_tables_cap_answers_400_wherever_a_retention_is_asked_for(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    # any client may ask for retentions: ids of any length each held a copy for up to the TTL cap
    base = fleet.urls[0]
    long_id = "s" * (MAX_SESSION_ID_CHARS + 1)
    retain = {"saga_retain_ttl_s": 60}
    for fields in (
        {"headers": {"X-Session-ID": long_id}, "vllm_xargs": retain},
        {"session_id": long_id, "vllm_xargs": retain},
        {"vllm_xargs": {**retain, "session_id": long_id}},
    ):
        status, error = await complete(http, base, tokens(300, 1), **fields)
        assert status == 400, fields
        assert (
            error["error"]["type"] == "BadRequestError"
            and f"at most {MAX_SESSION_ID_CHARS} characters" in error["error"]["message"]
        )
    for path, body in (
        ("retain", {"session_id": long_id, "ttl_s": 30}),
        ("release", {"session_id": long_id}),
    ):
        status, error = await call(http, "POST", f"{base}/saga/v1/{path}", body)
        assert status == 400 and error["error"]["param"] == "session_id", path
        assert f"at most {MAX_SESSION_ID_CHARS} characters" in error["error"]["message"]
    longest = "s" * MAX_SESSION_ID_CHARS
    status, _ = await complete(http, base, tokens(300, 2), session_id=longest, vllm_xargs=retain)
    assert status == 200
    _, listing = await call(http, "GET", f"{base}/saga/v1/retained")
    assert [s["session_id"] for s in listing["sessions"]] == [longest]
    status, released = await call(http, "POST", f"{base}/saga/v1/release", {"session_id": longest})
    assert (status, released["released"]) == (200, True)
