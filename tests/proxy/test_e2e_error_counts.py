"""End-to-end over loopback: `saga_errors_total` counts each call that failed for its client once, by the
cause the client saw; every failed attempt on a replica, saved by a retry or not, is one
`saga_upstream_failures_total{replica, cause}` (docs/observability.md). Before, an attempt counted in both, so
a call answered 504 after its replica timed out counted `upstream_timeout` twice, a call every replica
refused counted `upstream_5xx` once per replica, and a call a retry saved still counted as an error."""

from __future__ import annotations

import contextlib
import time

import aiohttp
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.scheduler import build_policy
from proxy.server import running_proxy
from tests.proxy.fakes import config, dying_stream_replica, dying_whole_replica, fake_replica
from tests.proxy.test_e2e_failures import MESSAGES, _FullQueueCore, call

SERVERS = pytest.mark.parametrize("server", ["fast", "aiohttp"])


async def counts(http: aiohttp.ClientSession, url: str) -> dict[str, dict[tuple[str, ...], float]]:
    """Each counter's samples by label values (`saga_errors_total`: (cause,); upstream failures: (replica,
    cause))."""
    async with http.get(f"{url}/metrics") as r:
        text = await r.text()
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (
                "saga_errors_total",
                "saga_upstream_failures_total",
                "saga_rejected_total",
                "saga_calls_total",
            ):
                key = tuple(
                    sample.labels[name] for name in ("replica", "cause", "status") if name in sample.labels
                )
                out.setdefault(sample.name, {})[key] = sample.value
    return out


@SERVERS
async def test_a_first_byte_timeout_counts_one_error_and_one_failed_attempt(
    http: aiohttp.ClientSession, server: str
) -> None:
    async with (
        fake_replica("hang") as hanging,
        running_proxy(config([hanging.url], first_byte_timeout_s=0.3, server=server)) as url,
    ):
        status, payload, _ = await call(http, url)
        seen = await counts(http, url)
    assert status == 504 and payload["error"]["code"] == "upstream_timeout"
    assert seen["saga_errors_total"] == {("upstream_timeout",): 1.0}
    assert seen["saga_upstream_failures_total"] == {(hanging.url, "upstream_timeout"): 1.0}


@SERVERS
async def test_a_call_every_replica_refuses_is_one_error_and_an_attempt_per_replica(
    http: aiohttp.ClientSession, server: str
) -> None:
    async with (
        fake_replica("error-503") as a,
        fake_replica("error-503") as b,
        running_proxy(config([a.url, b.url], server=server)) as url,
    ):
        status, _, _ = await call(http, url)
        seen = await counts(http, url)
    assert status == 503
    assert seen["saga_errors_total"] == {("upstream_5xx",): 1.0}
    failed = {(a.url, "upstream_5xx"): 1.0, (b.url, "upstream_5xx"): 1.0}
    assert seen["saga_upstream_failures_total"] == failed


@SERVERS
async def test_a_call_a_retry_saved_is_no_error(http: aiohttp.ClientSession, server: str) -> None:
    async with (
        fake_replica("error-503") as bad,
        fake_replica() as good,
        running_proxy(config([bad.url, good.url], policy="round-robin", server=server)) as url,
    ):
        statuses = [(await call(http, url))[0] for _ in range(2)]  # round robin: one starts on the bad one
        seen = await counts(http, url)
    assert statuses == [200, 200] and bad.calls >= 1  # each call that met the bad replica moved on
    assert seen.get("saga_errors_total", {}) == {}
    assert seen["saga_upstream_failures_total"] == {(bad.url, "upstream_5xx"): float(bad.calls)}


@SERVERS
async def test_a_refusal_counts_its_code_once(http: aiohttp.ClientSession, server: str) -> None:
    async with fake_replica() as replica:
        core = _FullQueueCore([replica.url], build_policy("round-robin"), time.monotonic)
        async with running_proxy(config([replica.url], server=server), core) as url:
            status, payload, _ = await call(http, url)
            seen = await counts(http, url)
    assert status == 429 and payload["error"]["code"] == "queue_full"
    assert seen["saga_errors_total"] == {("queue_full",): 1.0}  # not also `rejected`
    assert seen["saga_rejected_total"] == {(): 1.0}


@SERVERS
async def test_a_replica_dying_mid_stream_counts_once(http: aiohttp.ClientSession, server: str) -> None:
    async with dying_stream_replica() as dying, running_proxy(config([dying], server=server)) as url:
        body = {"model": "fake", "messages": MESSAGES, "stream": True}
        async with http.post(f"{url}/v1/chat/completions", json=body) as r:
            raw = await r.read()
        seen = await counts(http, url)
    assert b'"error"' in raw
    assert seen["saga_errors_total"] == {("upstream_mid_answer",): 1.0}
    assert seen["saga_upstream_failures_total"] == {(dying, "upstream_mid_answer"): 1.0}


@SERVERS
async def test_a_whole_answer_cut_short_is_asked_of_another_replica(
    http: aiohttp.ClientSession, server: str
) -> None:
    """A whole answer whose replica died mid-body was answered 502 though none of it had reached the client,
    and the session stayed on that replica, where the SDKs' own retries went too (the forty-seventh
    session's review). Now the call is retried on the other replica: no error for the client, one failed
    attempt on the dying one."""
    cut: list[bytes] = []
    async with (
        dying_whole_replica(cut) as dying,
        fake_replica() as good,
        running_proxy(config([dying, good.url], policy="round-robin", server=server)) as url,
    ):
        answers = [await call(http, url) for _ in range(2)]  # round robin: one starts on the dying one
        seen = await counts(http, url)
    assert [status for status, _, _ in answers] == [200, 200] and len(cut) >= 1, answers
    assert seen.get("saga_errors_total", {}) == {}
    assert seen["saga_upstream_failures_total"] == {(dying, "upstream_mid_answer"): float(len(cut))}


@SERVERS
@pytest.mark.parametrize("partial", [False, True])
async def test_a_stream_cut_before_its_first_event_is_asked_of_another_replica(
    http: aiohttp.ClientSession, server: str, partial: bool
) -> None:
    """A stream whose replica sent its head and died before its first event (during its prefill, or with half
    an event sent) ended with the error event, though nothing of the answer had reached the client, and the
    SDKs never retry a stream (the forty-seventh session's second review). Its head now waits for its first
    whole event, and the call is retried on the other replica."""
    async with (
        dying_stream_replica(partial, events=0) as dying,
        fake_replica() as good,
        running_proxy(config([dying, good.url], policy="round-robin", server=server)) as url,
    ):
        body = {"model": "fake", "messages": MESSAGES, "stream": True}
        answers = []
        for _ in range(2):  # round robin: one starts on the dying one
            async with http.post(f"{url}/v1/chat/completions", json=body) as r:
                answers.append((r.status, await r.text()))
        seen = await counts(http, url)
    assert all(status == 200 and text.rstrip().endswith("data: [DONE]") for status, text in answers), answers
    assert all('"error"' not in text for _, text in answers), answers
    assert seen.get("saga_errors_total", {}) == {}
    assert list(seen["saga_upstream_failures_total"]) == [(dying, "upstream_mid_answer")]


@SERVERS
async def test_a_whole_answer_cut_short_with_no_other_replica_is_a_502(
    http: aiohttp.ClientSession, server: str
) -> None:
    cut: list[bytes] = []
    lone = config([], server=server, breaker_failures=1)
    async with dying_whole_replica(cut) as dying:
        async with running_proxy(msgspec.structs.replace(lone, replicas=[dying])) as url:
            status, payload, _ = await call(http, url)
            tried = len(cut)  # (not sent again to the replica that cut it)
            seen = await counts(http, url)
            await call(http, url)  # a cut whole answer is a 5xx's case: it opens no lone replica's breaker
            state = await (await http.get(f"{url}/saga/v1/state")).json()
        assert state["replicas"][0]["healthy"], state
    assert status == 502 and payload["error"]["message"] == "the replica failed while answering", payload
    assert tried == 1
    # counted as before retries were made (and as a 502, where the replica's 200 was counted)
    assert seen["saga_errors_total"] == {("upstream_mid_answer",): 1.0}
    assert seen["saga_upstream_failures_total"] == {(dying, "upstream_mid_answer"): 1.0}
    assert seen["saga_calls_total"] == {("502",): 1.0}


@SERVERS
async def test_one_request_every_replica_cuts_does_not_take_them_all_out(
    http: aiohttp.ClientSession, server: str
) -> None:
    """With the retries of a cut whole answer, each cut counted toward its replica's breaker at once: one
    request every replica cuts, sent three times (an SDK's retries of a 502), opened every breaker and the
    next good call got a 503 (the forty-seventh session's review of its fix). A cut now counts as a 5xx does:
    toward the breaker only once another replica answers the call, the last one too (with one failure
    opening a breaker, a request every replica cut still took them all out: the fourth review)."""
    cut: list[bytes] = []
    async with contextlib.AsyncExitStack() as stack:
        replicas = [await stack.enter_async_context(dying_whole_replica(cut, b"POISON")) for _ in range(3)]
        proxy = config(replicas, server=server, breaker_failures=1)
        url = await stack.enter_async_context(running_proxy(proxy))
        poison = {"model": "fake", "messages": [{"role": "user", "content": "POISON"}]}
        for _ in range(3):
            async with http.post(f"{url}/v1/chat/completions", json=poison) as r:
                assert r.status == 502
        status, _, _ = await call(http, url)
        state = await (await http.get(f"{url}/saga/v1/state")).json()
    assert len(cut) == 9 and status == 200
    assert all(replica["healthy"] for replica in state["replicas"]), state


async def test_the_unlabelled_counters_show_zero_before_their_first_event(
    http: aiohttp.ClientSession,
) -> None:
    """`saga_rejected_total`, `saga_retries_total` and `saga_client_disconnects_total` had no sample until
    their first event, so the dashboard's `rate(saga_rejected_total[1m])` panel said "No data" (the
    forty-fourth session's review); prometheus_client's own counters start at 0."""
    async with (
        fake_replica("ok") as ok,
        running_proxy(config([ok.url])) as url,
        http.get(f"{url}/metrics") as r,
    ):
        text = await r.text()
    families = text_string_to_metric_families(text)
    samples = {s.name: s.value for f in families for s in f.samples if not s.labels}
    for name in ("saga_rejected_total", "saga_retries_total", "saga_client_disconnects_total"):
        assert samples.get(name) == 0.0, name
