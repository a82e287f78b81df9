"""End-to-end over loopback: a Responses API chain through `previous_response_id` stays on the replica that
stored its responses (vLLM keeps them in its own memory, as the simulated replica does), under every policy;
when that replica is gone the continuation gets the proxy's clear error, not another replica's 404."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from simulator.server import ReplicaFleet, start_fleet
from tests.recording_core import RecordingCore


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(3, time_scale=200.0)
    yield fleet
    await fleet.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def respond(
    http: aiohttp.ClientSession, url: str, previous: str | None, stream: bool
) -> tuple[int, str | None, str]:
    """(status, the response id, the replica that answered) of one turn; the id is None on an error."""
    body: dict[str, Any] = {"model": "saga-sim", "input": "and the next step?", "max_output_tokens": 4}
    if previous is not None:
        body["previous_response_id"] = previous
    async with http.post(f"{url}/v1/responses", json={**body, "stream": stream}) as r:
        text = await r.text()
        replica = r.headers.get("X-Saga-Replica", "")
        if r.status != 200:
            return r.status, None, text
    if stream:
        completed = [line[6:] for line in text.splitlines() if line.startswith("data: ")][-1]
        return 200, json.loads(completed)["response"]["id"], replica
    return 200, json.loads(text)["id"], replica


@pytest.mark.parametrize("policy", ["round-robin", "least-request", "saga"])
async def test_a_chain_of_responses_stays_on_the_replica_that_stored_them(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, policy: str
) -> None:
    config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, policy=policy, access_log=False)
    async with running_proxy(config) as url:

        async def chain(k: int) -> set[str]:
            previous, replicas = None, set()
            for turn in range(5):
                status, previous, replica = await respond(http, url, previous, stream=(k + turn) % 2 == 1)
                assert status == 200, replica  # (the error body, when not 200)
                replicas.add(replica)
            return replicas

        # round-robin alone would scatter every chain over the three replicas (a 404 on each move)
        for replicas in await asyncio.gather(*(chain(k) for k in range(4))):
            assert len(replicas) == 1


async def test_a_streamed_response_reports_its_usage_and_tool_call_as_a_whole_one_does(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    """The scheduler learns a streamed answer's usage, finish and tool calls from its last event's
    `response`, as from the whole answer. Before, a streamed one reported no usage (the session learned no
    output tokens, no finish reason) and its function call four times over (each event naming it)."""
    core = RecordingCore(fleet.urls)
    config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, policy="round-robin", access_log=False)
    tools = [{"type": "function", "name": "read_file", "parameters": {"type": "object"}}]
    async with running_proxy(config, core) as url:
        for stream in (False, True):
            for extra in ({}, {"tools": tools, "tool_choice": "required"}):
                body = {"model": "saga-sim", "input": "read it", "max_output_tokens": 40, "stream": stream}
                async with http.post(f"{url}/v1/responses", json={**body, **extra}) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
    whole_text, whole_call, streamed_text, streamed_call = core.usages
    for whole, streamed in ((whole_text, streamed_text), (whole_call, streamed_call)):
        assert whole is not None and streamed is not None
        assert streamed.prompt_tokens == whole.prompt_tokens > 0 and streamed.completion_tokens > 0
    for text in (whole_text, streamed_text):
        assert text is not None and text.finish_reason in ("stop", "length") and not text.tool_names
    for call in (whole_call, streamed_call):
        assert call is not None and (call.finish_reason, call.tool_names) == ("tool_calls", ("read_file",))


async def test_a_continuation_whose_replica_is_gone_gets_a_clear_error_and_nothing_leaks(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    config = ProxyConfig(
        replicas=fleet.urls, port=0, seed=1, policy="round-robin", health_interval_s=0.1, access_log=False
    )
    async with running_proxy(config) as url:
        status, previous, replica = await respond(http, url, None, stream=False)
        assert status == 200 and previous is not None
        crash = {"kind": "crash", "duration_s": 30}
        async with http.post(f"{replica}/saga/v1/faults", json=crash) as r:
            assert r.status == 200
        for stream in (False, True):
            status, _, error = await respond(http, url, previous, stream=stream)
            # refused by the proxy (down: 503; or failed on dispatch before a probe saw it: 502), naming the
            # replica, instead of a "Response ... not found" from a replica that never stored it
            assert status in (502, 503), error
            assert "the only one holding what this call continues" in error and replica in error
            assert "not found" not in error
        async with http.get(f"{url}/saga/v1/state") as r:
            state = await r.json()
        assert all(r["in_flight"] == 0 for r in state["replicas"])
        # a new chain is served by the replicas left
        status, _, other = await respond(http, url, None, stream=False)
        assert status == 200 and other != replica


async def test_a_proxy_with_no_record_of_a_response_finds_the_replica_that_stored_it(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    """Chains begun through one SAGA instance continue through another (a second pod, or the first after a
    restart), which asks the replicas which one stored each response; an id no replica has is looked up
    once, then routed as usual for a while (vLLM's own 404)."""
    config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, policy="round-robin", access_log=False)
    async with running_proxy(config) as first_url:
        begun = [await respond(http, first_url, None, stream=False) for _ in range(6)]
    assert len({replica for _, _, replica in begun}) > 1  # round-robin spread them
    async with running_proxy(config) as url:
        # a call of its own first: this instance's round-robin turn is then one off the first one's, so
        # without a lookup every continuation would go to the other replica
        assert (await respond(http, url, None, stream=False))[0] == 200
        for (_, previous, home), stream in zip(begun, [False, True] * 3, strict=True):
            for _turn in range(2):
                status, previous, replica = await respond(http, url, previous, stream=stream)
                assert status == 200 and replica == home, replica
        for _attempt in range(3):
            status, _, error = await respond(http, url, "resp_unknown", stream=False)
            assert status == 404 and "resp_unknown" in error
        async with http.get(f"{url}/saga/v1/state") as r:
            assert all(row["in_flight"] == 0 for row in (await r.json())["replicas"])
        async with http.get(f"{url}/metrics") as r:
            metrics = await r.text()
    # one lookup per chain (its second turn's id is known: this proxy answered it), one for the unknown id
    assert 'saga_response_lookups_total{result="found"} 6.0' in metrics
    assert 'saga_response_lookups_total{result="missing"} 1.0' in metrics
    assert 'saga_response_lookups_total{result="skipped"} 2.0' in metrics


async def test_a_chain_goes_on_on_a_draining_replica_until_it_is_removed(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, access_log=False)
    async with running_proxy(config) as url:
        status, previous, home = await respond(http, url, None, stream=False)
        assert status == 200
        async with http.post(f"{url}/saga/v1/replicas/drain", json={"url": home}) as r:
            assert r.status == 200
        for stream in (False, True):
            status, previous, replica = await respond(http, url, previous, stream=stream)
            assert status == 200 and replica == home  # only the draining replica holds the chain
        for _ in range(3):  # new work goes elsewhere
            status, _, replica = await respond(http, url, None, stream=False)
            assert status == 200 and replica != home
        async with http.post(f"{url}/saga/v1/replicas/remove", json={"url": home}) as r:
            assert r.status == 200
        status, _, error = await respond(http, url, previous, stream=False)
        assert status == 503 and "no longer served" in error
        # retrieve and cancel are told the same (they were vLLM's 404, "not found", while the replica
        # still held it: the forty-fourth session's review)
        for method, path in (("GET", ""), ("POST", "/cancel")):
            async with http.request(method, f"{url}/v1/responses/{previous}{path}") as r:
                answer = (r.status, r.headers.get("Retry-After"), (await r.json())["error"])
            assert answer[:2] == (503, "1") and answer[2]["code"] == "no_replica", answer
            assert "no longer served" in answer[2]["message"] and home in answer[2]["message"], answer


async def test_retrieve_and_cancel_reach_the_replica_that_stored_the_response(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, policy="round-robin", access_log=False)
    async with running_proxy(config) as url:
        stored = [await respond(http, url, None, stream=False) for _ in range(3)]
    async with running_proxy(config) as url:  # a fresh proxy: it asks the replicas
        for fresh in (True, False):  # then from its own record
            for _, response_id, home in reversed(stored):
                async with http.get(f"{url}/v1/responses/{response_id}") as r:
                    assert r.status == 200 and r.headers["X-Saga-Replica"] == home, fresh
                    assert (await r.json())["id"] == response_id
        _, response_id, home = stored[0]
        async with http.post(f"{url}/v1/responses/{response_id}/cancel") as r:
            answer = (r.status, r.headers.get("X-Saga-Replica"), await r.json())
        assert answer[:2] == (400, home) and "Cannot cancel" in answer[2]["error"]["message"]
        async with http.get(f"{url}/v1/responses/resp_nowhere") as r:
            assert r.status == 404
            error = (await r.json())["error"]
        assert (
            error["message"] == "Response with id 'resp_nowhere' not found."
            and error["param"] == "response_id"
        )
        for bad in ("..%2Fmetrics", "a%0D%0AX-Injected:%201", "r" * 300):
            async with http.get(f"{url}/v1/responses/{bad}") as r:
                text = await r.text()
                assert r.status == 400 and "Injected" not in text and "rrrr" not in text, text
                assert (await r.json())["error"]["code"] == "invalid_response_id"


async def test_retrieving_a_response_with_no_replica_up_to_ask_is_a_503_not_a_404(
    http: aiohttp.ClientSession,
) -> None:
    """A 404 tells the client the response is gone for good (the Agents SDK starts over); with every
    replica down the proxy could ask none of them, so it says so, with when to try again."""
    fleet = await start_fleet(1, time_scale=200.0)
    config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, health_interval_s=0.05, access_log=False)
    async with running_proxy(config) as url:
        _, response_id, _ = await respond(http, url, None, stream=False)
        await fleet.close()  # its replica is gone; this proxy never learns where the response was
    async with running_proxy(config) as url:
        for _ in range(200):  # until its first health round found the replica down
            async with http.get(f"{url}/saga/v1/replicas") as r:
                if not any(row["healthy"] for row in (await r.json())["replicas"]):
                    break
            await asyncio.sleep(0.05)
        async with http.get(f"{url}/v1/responses/{response_id}") as r:
            answer = (r.status, r.headers.get("Retry-After"), (await r.json())["error"]["code"])
    assert answer == (503, "1", "no_replica")


async def test_retrieve_while_the_replica_holding_the_response_is_down_is_told_to_retry(
    http: aiohttp.ClientSession,
) -> None:
    """Retrieving a response whose replica is down was tried there anyway and answered 502, quoting the
    refused connect's exception, with no Retry-After (a continuation of it gets a 503 that says when to
    retry): the forty-seventh session's review. Both before the probes find it down and after."""
    home, other = await start_fleet(1, time_scale=200.0), await start_fleet(1, time_scale=200.0)
    config = ProxyConfig(replicas=[*home.urls, *other.urls], port=0, seed=1, policy="round-robin")
    config = msgspec.structs.replace(config, access_log=False, health_interval_s=0.2)
    try:
        async with running_proxy(config) as url:
            for _ in range(4):  # one of them on `home`
                status, response_id, replica = await respond(http, url, None, stream=False)
                if replica == home.urls[0]:
                    break
            assert status == 200 and replica == home.urls[0]
            await home.close()
            for _ in range(100):  # (bounded: until the probes say it is down)
                async with http.get(f"{url}/v1/responses/{response_id}") as r:
                    answer = (r.status, r.headers.get("Retry-After"), (await r.json())["error"])
                assert answer[:2] == (503, "1") and answer[2]["code"] == "no_replica", answer
                assert "Error(" not in answer[2]["message"], answer
                if "is down" in answer[2]["message"]:
                    break
                assert "could not be reached" in answer[2]["message"], answer
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the replica was never found down")
    finally:
        await other.close()
