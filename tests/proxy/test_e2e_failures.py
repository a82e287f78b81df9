"""End-to-end over loopback: how the proxy handles replicas that fail, stall or refuse (issue 12)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.scheduler import Decision, Reject, RequestInfo, SchedulerCore, build_policy
from proxy.server import running_proxy
from tests.proxy.fakes import FakeReplica, config, fake_replica, replica_app, serving

MESSAGES = [{"role": "user", "content": "hello"}]


async def call(
    http: aiohttp.ClientSession, url: str, session: str = "", **body: Any
) -> tuple[int, dict[str, Any], str]:
    headers = {"X-Session-ID": session} if session else {}
    payload = {"model": "fake", "messages": MESSAGES, **body}
    async with http.post(f"{url}/v1/chat/completions", json=payload, headers=headers) as r:
        return r.status, await r.json(), r.headers.get("X-Saga-Replica", "")


async def replica_view(http: aiohttp.ClientSession, url: str, replica: str) -> dict[str, Any]:
    async with http.get(f"{url}/saga/v1/replicas") as r:
        views: list[dict[str, Any]] = (await r.json())["replicas"]
    return next(v for v in views if v["replica_id"] == replica)


async def until_healthy(http: aiohttp.ClientSession, url: str, replica: str, healthy: bool = True) -> bool:
    for _ in range(200):  # a bounded wait for the health loop, not a timing assertion
        if (await replica_view(http, url, replica))["healthy"] == healthy:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_5xx_before_any_byte_is_retried_and_the_session_rebinds(http: aiohttp.ClientSession) -> None:
    async with (
        fake_replica() as flaky,
        fake_replica() as good,
        running_proxy(config([flaky.url, good.url])) as url,
    ):
        # Find a session that session-affinity placed on the flaky replica.
        for i in range(40):
            status, _, replica = await call(http, url, f"s{i}")
            assert status == 200
            if replica == flaky.url:
                session = f"s{i}"
                break
        else:
            pytest.fail("no session was ever placed on the first replica")
        flaky.mode = "error-503"
        calls_before = flaky.calls
        status, payload, replica = await call(http, url, session)
        assert (status, replica) == (200, good.url) and payload["choices"][0]["message"]["content"] == "hi"
        assert flaky.calls == calls_before + 1  # it was tried first, then the call moved on
        flaky.mode = "ok"
        assert await until_healthy(http, url, flaky.url)
        status, _, replica = await call(http, url, session)
    assert (status, replica) == (200, good.url)  # the session now lives where its prefix is


async def test_a_request_every_replica_refuses_does_not_take_the_fleet_down(
    http: aiohttp.ClientSession,
) -> None:
    """A call that makes every replica answer 500 (a request vLLM chokes on) is tried on each and its error
    relayed, but the replicas answered: they stay in rotation. Before, each was marked down until its next
    probe, so one such request (or a client retrying it) left every other call a 503."""
    cfg = config([], breaker_failures=3)
    cfg.health_interval_s = 30.0  # no probe brings a replica back during the test
    async with fake_replica() as a, fake_replica() as b:
        cfg.replicas = [a.url, b.url]
        async with running_proxy(cfg) as url:
            for _ in range(2):  # fewer in a row than the breaker's count
                status, payload, _ = await call(http, url, metadata={"poison": True})
                assert status == 500 and payload["error"]["message"] == "engine error on this request"
                statuses = [(await call(http, url, f"good-{i}"))[0] for i in range(4)]
                assert statuses == [200] * 4
            views = [await replica_view(http, url, r) for r in (a.url, b.url)]
        assert a.calls >= 2 and b.calls >= 2  # the poisoned calls were tried on both
    assert all(v["healthy"] and v["breaker"] == "closed" for v in views), views


async def test_when_every_replica_fails_the_last_replica_error_is_relayed(
    http: aiohttp.ClientSession,
) -> None:
    async with (
        fake_replica("error-503") as a,
        fake_replica("error-503") as b,
        running_proxy(config([a.url, b.url])) as url,
    ):
        status, payload, _ = await call(http, url)
        async with http.get(f"{url}/saga/v1/state") as r:
            state = await r.json()
    assert status == 503 and payload == {"error": {"message": "overloaded"}}
    assert a.calls == 1 and b.calls == 1 and state["in_flight"] == 0


async def test_a_circuit_breaker_keeps_a_failing_replica_out(http: aiohttp.ClientSession) -> None:
    cfg = config([], breaker_failures=2, breaker_cooldown_s=3600)
    async with fake_replica("error-503") as bad, fake_replica() as good:
        cfg.replicas = [bad.url, good.url]
        async with running_proxy(cfg) as url:
            for i in range(200):  # /health keeps answering 200, so it comes back until the breaker opens
                status, _, replica = await call(http, url, f"s{i}")
                assert (status, replica) == (200, good.url)
                if bad.calls >= 2:
                    break
                await asyncio.sleep(0.02)
            view = await replica_view(http, url, bad.url)
            assert view["breaker"] == "open" and not view["healthy"]
            await asyncio.sleep(0.5)  # several probe rounds in which /health says 200
            view = await replica_view(http, url, bad.url)
            calls = bad.calls
            results = [await call(http, url, f"t{i}") for i in range(6)]
    assert view["breaker"] == "open" and not view["healthy"]
    assert {(status, replica) for status, _, replica in results} == {(200, good.url)}
    assert bad.calls == calls


async def test_a_replica_silent_past_the_first_byte_timeout_is_a_504(http: aiohttp.ClientSession) -> None:
    async with (
        fake_replica("hang") as hanging,
        running_proxy(config([hanging.url], first_byte_timeout_s=0.3)) as url,
    ):
        status, payload, _ = await call(http, url)
        await asyncio.wait_for(hanging.cancelled.wait(), 30)  # the upstream call was abandoned
        async with http.get(f"{url}/saga/v1/state") as r:
            state = await r.json()
    assert status == 504 and payload["error"]["code"] == "upstream_timeout"
    assert state["in_flight"] == 0


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_a_stalled_stream_ends_with_an_error_event(http: aiohttp.ClientSession, server: str) -> None:
    cfg = config([], stream_idle_timeout_s=0.3, server=server)
    async with fake_replica("stall-stream") as stalling:
        cfg.replicas = [stalling.url]
        async with running_proxy(cfg) as url:
            body = {"model": "fake", "messages": MESSAGES, "stream": True}
            async with http.post(f"{url}/v1/chat/completions", json=body) as r:
                raw = await r.read()
            await asyncio.wait_for(stalling.cancelled.wait(), 30)
    events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "hi"
    error = json.loads(events[-1])["error"]
    assert error["code"] == "upstream_timeout" and "stream_idle_timeout_s" in error["message"]  # not "failed"


class _FullQueueCore(SchedulerCore):
    """A core whose admission queue is full: it refuses every call with 429."""

    def request_arrived(self, req: RequestInfo) -> list[Decision]:
        return [Reject(req.request_id, "the admission queue is full", status=429)]


async def test_a_full_queue_is_a_429_with_retry_after(http: aiohttp.ClientSession) -> None:
    async with fake_replica() as replica:
        core = _FullQueueCore([replica.url], build_policy("round-robin"), time.monotonic)
        async with (
            running_proxy(config([replica.url], retry_after_s=2.5), core) as url,
            http.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES}) as r,
        ):
            status, retry_after, payload = r.status, r.headers.get("Retry-After"), await r.json()
    assert status == 429 and retry_after == "3"  # whole seconds (RFC 9110), rounded up
    assert payload["error"]["type"] == "rate_limit_error" and replica.calls == 0


async def test_upstream_api_key_is_sent_to_replicas(http: aiohttp.ClientSession) -> None:
    seen: list[str] = []
    replica = FakeReplica()
    original = replica._call

    async def recording(request: Any) -> Any:
        seen.append(request.headers.get("Authorization", ""))
        return await original(request)

    replica._call = recording  # type: ignore[method-assign]
    await replica.start()
    try:
        async with running_proxy(config([replica.url], upstream_api_key="sk-up")) as url:
            status, _, _ = await call(http, url)
    finally:
        await replica.stop()
    assert status == 200 and seen == ["Bearer sk-up"]


async def test_the_proxys_own_reads_of_a_replicas_models_carry_the_upstream_key(
    http: aiohttp.ClientSession,
) -> None:
    """vLLM's `--api-key` guards `/v1/*`: the health loop's and `GET /v1/models`' reads of a replica's models
    sent no key, so with `upstream_api_key` set each replica answered 401: `GET /v1/models` through the
    proxy was a 503 and routing by model knew no replica's models (found by the seventh review)."""
    replica = FakeReplica()
    original = replica._models

    async def guarded(request: Any) -> Any:
        if request.headers.get("Authorization") != "Bearer sk-up":
            return web.json_response({"error": {"message": "Unauthorized"}}, status=401)
        return await original(request)

    replica._models = guarded  # type: ignore[method-assign]
    await replica.start()
    try:
        async with running_proxy(config([replica.url], upstream_api_key="sk-up")) as url:
            async with http.get(f"{url}/v1/models") as r:
                status, listed = r.status, await r.json()
            for _ in range(100):  # the health loop's first read (a bounded wait)
                async with http.get(f"{url}/saga/v1/replicas") as r:
                    (row,) = (await r.json())["replicas"]
                if row["models"]:
                    break
                await asyncio.sleep(0.05)
    finally:
        await replica.stop()
    assert status == 200 and [m["id"] for m in listed["data"]] == [replica.model]
    assert row["models"] == [replica.model]


async def test_v1_models_passes_the_clients_own_vllm_key_when_the_proxy_has_none(
    http: aiohttp.ClientSession,
) -> None:
    """Without `upstream_api_key` and `api_keys`, clients' calls carry vLLM's `--api-key` themselves, and
    `GET /v1/models` asked the replicas with no key: a 503 for every client (the thirteenth review). It now
    asks with the client's key, serves a union again only to the same key, and a key every replica refuses
    is refused (401), as vLLM would."""
    replica = FakeReplica()
    original = replica._models

    async def guarded(request: Any) -> Any:
        if request.headers.get("Authorization") != "Bearer sk-vllm":
            return web.json_response({"error": "Unauthorized"}, status=401)
        return await original(request)

    replica._models = guarded  # type: ignore[method-assign]
    await replica.start()
    answers = []
    try:
        async with running_proxy(config([replica.url])) as url:
            for auth in ("Bearer sk-vllm", "Bearer wrong", None, "Bearer sk-vllm"):
                headers = {"Authorization": auth} if auth else {}
                async with http.get(f"{url}/v1/models", headers=headers) as r:
                    answers.append((r.status, await r.json()))
    finally:
        await replica.stop()
    assert [status for status, _ in answers] == [200, 401, 401, 200]
    assert [m["id"] for m in answers[0][1]["data"]] == [replica.model] and answers[3][1] == answers[0][1]
    assert answers[1][1]["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(("status", "max_answer_bytes"), [(400, None), (503, None), (400, 100_000)])
async def test_a_long_replica_error_reaches_the_client_whole(
    http: aiohttp.ClientSession, status: int, max_answer_bytes: int | None
) -> None:
    """The proxy reads error answers itself (a 400 may be a replica refusing request priorities, a 5xx is
    retried and the last one relayed) and cut them to 64 KiB: a longer one (vLLM before 0.32 quoted the whole
    input in its 400 to a body it could not validate) reached the client as JSON that did not parse. Past
    `max_answer_bytes` it is the proxy's 502, as a whole answer is."""
    error = {"error": {"message": "validation failed: " + "x" * 200_000, "type": "BadRequestError"}}

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(error, status=status)

    app = replica_app(refuse)
    limits = {} if max_answer_bytes is None else {"max_answer_bytes": max_answer_bytes}
    async with serving(app) as replica, running_proxy(config([replica], access_log=False, **limits)) as url:
        async with http.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES}) as r:
            answered = (r.status, await r.read())
        async with http.get(f"{url}/saga/v1/state") as r:
            in_flight = (await r.json())["in_flight"]
    if max_answer_bytes is None:
        assert answered[0] == status
        assert json.loads(answered[1]) == error
    else:
        assert answered[0] == 502
        assert json.loads(answered[1])["error"]["code"] == "upstream_answer_too_large"
    assert in_flight == 0


async def test_a_prompt_the_replica_refuses_keeps_no_room_from_the_next_workflow(
    http: aiohttp.ClientSession,
) -> None:
    """Under saga's admission, a call the replica refuses (vLLM's 400 to a prompt past the model's context)
    reserved its footprint as a new workflow; it then held it as if the workflow were live between calls,
    so each next new workflow on that replica waited out the whole hold. Now nothing is held for it."""
    small_kv = 'vllm:cache_config_info{block_size="16",num_gpu_blocks="64"} 1\n'  # 1,024 tokens
    async with fake_replica("error-400", metrics=small_kv) as replica:
        cfg = config([replica.url], policy="saga")
        async with running_proxy(cfg) as url:
            for _ in range(200):  # until the health loop has read the capacity (bounded)
                async with http.get(f"{url}/saga/v1/replicas") as r:
                    if (await r.json())["replicas"][0]["kv_capacity_tokens"]:
                        break
                await asyncio.sleep(0.02)
            status, _, _ = await call(
                http, url, "too-long", messages=[{"role": "user", "content": "x " * 20_000}]
            )
            assert status == 400
            async with http.get(f"{url}/saga/v1/state") as r:
                state = await r.json()
            replica.mode = "ok"
            status, _, _ = await asyncio.wait_for(call(http, url, "next"), 10)
    assert state["admission"]["reserved_tokens"] == {replica.url: 0}
    assert status == 200
