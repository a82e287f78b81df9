"""End-to-end over loopback: the defects a new user hit in the proxy (issue 12), each one pinned down."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from proxy import server as proxy_server
from proxy.cli import build_parser
from proxy.server import running_proxy
from tests.proxy.fakes import OK_JSON, config, dying_stream_replica, fake_replica, replica_app, serving

MESSAGES = [{"role": "user", "content": "hello"}]


async def state_of(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/saga/v1/state") as r:
        result: dict[str, Any] = await r.json()
        return result


async def eventually_idle(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """The proxy's state once nothing is in flight (a bounded wait, not a timing assertion)."""
    for _ in range(100):
        state = await state_of(http, url)
        if state["in_flight"] == 0:
            break
        await asyncio.sleep(0.05)
    return state


def assert_openai_error(payload: dict[str, Any]) -> dict[str, Any]:
    error: dict[str, Any] = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"]
    return error


@pytest.mark.parametrize(
    ("partial", "usage"),
    [(False, False), (True, False), (True, True)],
    ids=["between-events", "mid-event", "mid-event-usage-asked"],
)
async def test_a_replica_dying_mid_stream_ends_the_stream_with_an_error_event(
    http: aiohttp.ClientSession, partial: bool, usage: bool
) -> None:
    """Whole events and then the error event, each line of them valid JSON: a replica cut in the middle of an
    event leaves no half event glued to the error. When the client asks for usage the proxy relays the bytes
    as they come (nothing to strip), and before the fix the half event went out and the error event was
    appended to its line (one soak answer of 94,235 was malformed so, 2026-12-04)."""
    body: dict[str, Any] = {"model": "fake", "messages": MESSAGES, "stream": True}
    if usage:
        body["stream_options"] = {"include_usage": True}
    async with dying_stream_replica(partial) as replica, running_proxy(config([replica])) as url:
        async with http.post(f"{url}/v1/chat/completions", json=body) as r:
            assert r.status == 200
            raw = await r.read()  # returns only because the proxy ends the stream
        state = await eventually_idle(http, url)
    assert b"HTTP/1.1" not in raw  # no second response written into the body
    events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "hi"  # what came before is kept
    assert_openai_error(json.loads(events[-1]))
    assert len(events) == 2  # the half event is not relayed
    assert state["in_flight"] == 0


@pytest.mark.parametrize(
    "identity",
    [
        {"session_id": "a\r\nb"},
        {"prompt_cache_key": "a\nb"},
        {"vllm_xargs": {"session_id": "a\rb"}},
        {"session_id": "s" * 1_000_000},
        {"session_id": "tab\there"},
    ],
    ids=["crlf-body", "lf-cache-key", "cr-xargs", "1mb-id", "tab"],
)
async def test_bad_identity_values_are_a_400_and_release_their_accounting(
    http: aiohttp.ClientSession, identity: dict[str, Any]
) -> None:
    body = {"model": "fake", "messages": MESSAGES, **identity}
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        async with http.post(f"{url}/v1/chat/completions", json=body) as r:
            status, payload, echoed = r.status, await r.json(), r.headers.get("X-Session-ID")
        state = await state_of(http, url)
        async with http.post(f"{url}/v1/chat/completions", json={"model": "fake", "messages": MESSAGES}) as r:
            ok = r.status
    assert status == 400 and echoed is None
    error = assert_openai_error(payload)
    assert error["param"] in {"session_id", "prompt_cache_key", "vllm_xargs.session_id"}
    assert state["in_flight"] == 0 and state["sessions"] == 0
    assert replica.calls == 1 and ok == 200  # the bad call never reached the replica; the next one did


@pytest.mark.parametrize("previous", ["resp_1\r\nX-Injected: yes", "r" * 1_000_000], ids=["crlf", "1mb"])
async def test_a_bad_previous_response_id_is_a_400_that_quotes_nothing_back(
    http: aiohttp.ClientSession, previous: str
) -> None:
    body = {"model": "fake", "input": "and then?", "previous_response_id": previous}
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        async with http.post(f"{url}/v1/responses", json=body) as r:
            status, raw = r.status, await r.read()
        state = await state_of(http, url)
    assert status == 400
    assert assert_openai_error(json.loads(raw))["param"] == "previous_response_id"
    assert b"Injected" not in raw and b"rrrrrrrr" not in raw
    assert state["in_flight"] == 0 and replica.calls == 0


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_an_unknown_expectation_is_a_417_in_the_openai_shape_on_every_route(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, server: str
) -> None:
    """aiohttp's own expectation check answered in text/plain, quoting the value, before any middleware."""
    monkeypatch.setattr(proxy_server, "server_kind", lambda config: server)
    headers = {"Expect": "yyyy-please"}
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        answers = []
        for method, path in [
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/models"),
            ("GET", "/saga/v1/state"),
            ("GET", "/nowhere"),  # no route
            ("GET", "/v1/chat/completions"),  # not its method
        ]:
            async with http.request(method, url + path, json={"messages": MESSAGES}, headers=headers) as r:
                answers.append((path, r.status, r.content_type, await r.read()))
        async with http.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES}, expect100=True) as r:
            ok = r.status  # 100-continue is met
    for path, status, content_type, raw in answers:
        assert (path, status, content_type) == (path, 417, "application/json")
        assert assert_openai_error(json.loads(raw))["code"] == "unsupported_expectation"
        assert b"yyyy" not in raw
    assert replica.calls == 1 and ok == 200


async def test_bad_identity_headers_are_a_400(http: aiohttp.ClientSession) -> None:
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        headers = {"X-Session-ID": "x" * 5000}
        async with http.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES}, headers=headers) as r:
            status, payload = r.status, await r.json()
    assert status == 400 and assert_openai_error(payload)["param"] == "x-session-id"


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"m","vllm_xargs":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b'},"messages":[]}',
        b'{"model":"m","messages":[{"role":"user","content":' + b"[" * 100_000 + b"]" * 100_000 + b"}]}",
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["in-vllm-xargs", "in-a-message", "top-level"],
)
async def test_deeply_nested_json_is_an_openai_400(http: aiohttp.ClientSession, body: bytes) -> None:
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        async with http.post(f"{url}/v1/chat/completions", data=body) as r:
            status, payload = r.status, await r.json()
        state = await state_of(http, url)
    assert status == 400 and assert_openai_error(payload)["type"] == "invalid_request_error"
    assert state["in_flight"] == 0


async def test_a_message_that_is_not_utf8_is_relayed_not_a_proxy_error(http: aiohttp.ClientSession) -> None:
    """The proxy decodes only what it reads of a body: a conversation naming no session has its assistant
    messages decoded (to infer the session), and one that was not UTF-8 was an uncaught error, the proxy's
    own 500. Now such a message is hashed as sent and the body goes to the replica, which judges it."""
    body = (
        b'{"model":"m","messages":[{"role":"user","content":"go"},'
        b'{"role":"assistant","content":"bad \xff"},{"role":"user","content":"on"}]}'
    )
    received: list[bytes] = []

    async def chat(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(body=OK_JSON, content_type="application/json")

    async with serving(replica_app(chat)) as replica, running_proxy(config([replica])) as url:
        async with http.post(f"{url}/v1/chat/completions", data=body) as r:
            status = r.status
        state = await state_of(http, url)
    assert status == 200 and state["in_flight"] == 0
    assert len(received) == 1 and b"bad \xff" in received[0]


async def test_the_proxy_refuses_in_one_openai_shape(http: aiohttp.ClientSession) -> None:
    async with fake_replica() as replica, running_proxy(config([replica.url], max_body_bytes=1000)) as url:
        async with http.post(f"{url}/v1/chat/completions", data=b"{" + b" " * 5000 + b"}") as r:
            too_big = (r.status, r.content_type, await r.json())
        async with http.post(f"{url}/v1/chat/completions", data=b"{}", headers={"X-Big": "y" * 20000}) as r:
            bad_http = (r.status, r.content_type, await r.read())
        async with http.get(f"{url}/nowhere") as r:
            not_found = (r.status, r.content_type, await r.json())
    assert too_big[:2] == (413, "application/json") and assert_openai_error(too_big[2])
    assert bad_http[:2] == (400, "application/json")
    assert b"yyyy" not in bad_http[2]  # the offending value is not reflected
    assert_openai_error(json.loads(bad_http[2]))
    assert not_found[:2] == (404, "application/json") and assert_openai_error(not_found[2])


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_a_body_over_the_limit_is_refused_alike_by_both_servers(
    http: aiohttp.ClientSession, server: str
) -> None:
    """Under `server: aiohttp` a body over `max_body_bytes` got aiohttp's own message and no `code` (the
    fast server's: `request_too_large`): the forty-seventh session's review."""
    proxy = config([], max_body_bytes=1000, server=server)
    async with (
        fake_replica() as replica,
        running_proxy(msgspec.structs.replace(proxy, replicas=[replica.url])) as url,
        http.post(f"{url}/v1/chat/completions", data=b"{" + b" " * 5000 + b"}") as r,
    ):
        error = (r.status, (await r.json())["error"])
        async with http.get(f"{url}/metrics") as m:
            metrics = await m.text()
    assert error[0] == 413 and error[1]["code"] == "request_too_large", error
    assert 'saga_errors_total{cause="request_too_large"} 1.0' in metrics  # (aiohttp counted `http_413`)
    assert error[1]["message"] == "request body over the proxy's limit of 1000 bytes", error


async def test_client_disconnects_log_no_error(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with fake_replica("stall-stream") as streaming, running_proxy(config([streaming.url])) as url:
        body = {"model": "fake", "messages": MESSAGES, "stream": True}
        async with http.post(f"{url}/v1/chat/completions", json=body) as r:
            await r.content.readline()  # the stream has started; now hang up
        state = await eventually_idle(http, url)
    async with fake_replica("hang") as hanging, running_proxy(config([hanging.url])) as url:
        with contextlib.suppress(TimeoutError):
            await http.post(
                f"{url}/v1/chat/completions", json={"messages": MESSAGES}, timeout=aiohttp.ClientTimeout(0.5)
            )
        await asyncio.wait_for(hanging.cancelled.wait(), 30)  # the proxy hung up on the replica too
        hung_state = await eventually_idle(http, url)
    assert state["in_flight"] == 0 and hung_state["in_flight"] == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    # Each hang-up has its access line, as nginx writes it: the status sent (the stream's 200), or 499 when
    # no answer had started.
    calls = [
        r.getMessage() for r in caplog.records if r.name == "saga.access" and "/v1/chat" in r.getMessage()
    ]
    if proxy_server.server_kind(config([])) == "fast":  # aiohttp logs no cancelled handler (docs/config.md)
        assert [line.split('" ')[1].split()[0] for line in calls] == ["200", "499"]


async def test_a_hang_up_mid_answer_relayed_from_callbacks_has_its_access_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A call relayed from the connections' callbacks (proxy/inline_relay.py: an idle pooled connection to
    the replica, here left by the call before it on the same client connection) whose client hangs up
    mid-answer has its access line too, as one served in a task has: the status sent (the stream's 200)."""
    if proxy_server.server_kind(config([])) != "fast":
        pytest.skip("aiohttp logs no cancelled handler (docs/config.md)")
    caplog.set_level(logging.INFO, logger="saga.access")
    async with (
        fake_replica("stall-stream") as streaming,
        running_proxy(config([streaming.url])) as url,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http,
    ):
        async with http.post(f"{url}/v1/chat/completions?warm", json={"messages": MESSAGES}) as r:
            assert r.status == 200, await r.text()
        body = {"model": "fake", "messages": MESSAGES, "stream": True}
        async with http.post(f"{url}/v1/chat/completions?cut", json=body) as r:
            await r.content.readline()  # the stream has started; now hang up
            r.close()
        await asyncio.wait_for(streaming.cancelled.wait(), 30)  # the proxy hung up on the replica too
        assert (await eventually_idle(http, url))["in_flight"] == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "saga.access" and "?cut" in r.getMessage()]
    assert [line.split('" ')[1].split()[0] for line in lines] == ["200"], lines


async def test_a_client_half_closing_after_its_call_is_taken_as_gone(http: aiohttp.ClientSession) -> None:
    """`shutdown(SHUT_WR)` once the call is sent reads as a hang-up (TCP tells them apart only when a write
    fails): the call is aborted upstream rather than left generating for a client that may have given up
    (docs/config.md, `server`)."""
    body = b'{"model":"fake","messages":[{"role":"user","content":"hi"}]}'
    async with fake_replica("hang") as hanging, running_proxy(config([hanging.url])) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        for _ in range(500):  # until the call reached the replica
            if hanging.calls:
                break
            await asyncio.sleep(0.01)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 10)
        await asyncio.wait_for(hanging.cancelled.wait(), 10)  # the proxy hung up on the replica
        writer.close()
        state = await eventually_idle(http, url)
    assert answer == b"" and state["in_flight"] == 0


async def test_access_log_and_replica_down_are_logged(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with fake_replica() as replica:
        dead = replica.url
    async with (
        fake_replica() as replica,
        running_proxy(config([dead, replica.url], policy="round-robin")) as url,
    ):
        for _ in range(2):
            async with http.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES}) as r:
                assert r.status == 200
    access = [r.getMessage() for r in caplog.records if r.name == "saga.access"]
    assert any("POST /v1/chat/completions" in line and " 200 " in line for line in access)
    down = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and dead in r.getMessage()]
    assert any("down" in line for line in down)


def test_serve_help_shows_the_defaults() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(out.getvalue().split())
    for shown in ("default: 8000", "default: 127.0.0.1", "default: saga"):
        assert shown in text


async def test_state_forgets_a_dead_replicas_load(http: aiohttp.ClientSession) -> None:
    metrics = "vllm:num_requests_waiting 7\nvllm:num_requests_running 3\nvllm:kv_cache_usage_perc 0.5\n"
    async with (
        fake_replica(metrics=metrics) as busy,
        fake_replica() as other,
        running_proxy(config([busy.url, other.url])) as url,
    ):
        for _ in range(100):
            seen = {r["replica_id"]: r for r in (await state_of(http, url))["replicas"]}
            if seen[busy.url]["waiting"] == 7:
                break
            await asyncio.sleep(0.05)
        assert (seen[busy.url]["waiting"], seen[busy.url]["running"]) == (7, 3)
        await busy.stop()
        for _ in range(100):
            seen = {r["replica_id"]: r for r in (await state_of(http, url))["replicas"]}
            if not seen[busy.url]["healthy"]:
                break
            await asyncio.sleep(0.05)
    dead = seen[busy.url]
    assert not dead["healthy"]
    assert (dead["waiting"], dead["running"], dead["kv_usage"]) == (0, 0, 0.0)


@pytest.mark.parametrize("policy", ["round-robin", "saga"])
async def test_a_client_cannot_ask_the_replicas_for_kv_retention_itself(
    http: aiohttp.ClientSession, policy: str
) -> None:
    """KV retention is the scheduler's to ask for (docs/retention-api.md): a client's `saga_retain_ttl_s` and
    `saga_retain_priority` in `vllm_xargs` reached the replica, which pinned the session's KV for its longest
    TTL at a priority nothing could break, outside the scheduler's accounting. The client's other xargs and
    its session id stay."""
    hog = {"saga_retain_ttl_s": 600, "saga_retain_priority": -(10**9), "session_id": "mine", "foo": 1}
    body = {"model": "fake", "messages": MESSAGES, "vllm_xargs": hog}
    async with (
        fake_replica("tools") as replica,
        running_proxy(config([replica.url], policy=policy)) as url,
        http.post(f"{url}/v1/chat/completions", json=body) as r,
    ):
        status = r.status
    assert status == 200
    sent = replica.bodies[0]["vllm_xargs"]
    assert isinstance(sent, dict) and sent["session_id"] == "mine" and sent["foo"] == 1
    if policy == "round-robin":  # asks for no retention of its own
        assert sent == {"session_id": "mine", "foo": 1}
    assert sent.get("saga_retain_priority") != -(10**9) and sent.get("saga_retain_ttl_s") != 600


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one series of `/metrics` (0 when it is absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{want}}}" if want else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("policy", ["round-robin", "saga"])
async def test_a_replica_error_relayed_as_it_was_carries_the_session_and_is_counted(
    http: aiohttp.ClientSession, policy: str
) -> None:
    """A replica's 400 (a request it cannot take) and, when every replica failed, the last replica's 5xx are
    relayed as they were; like every relayed answer they name the session and count in `saga_calls_total`
    and `saga_responses_total`. Under `saga` the 400 took another path (the proxy reads it whole to see
    whether the replica refused the request priority), which did neither. One real retry counts one."""
    body = {"model": "fake", "messages": MESSAGES}
    session = {"X-Session-ID": "relayed-errors"}
    async with (
        fake_replica("error-400") as refusing,
        running_proxy(config([refusing.url], policy=policy)) as url,
    ):
        async with http.post(f"{url}/v1/chat/completions", json=body, headers=session) as r:
            refused = (r.status, r.headers.get("X-Session-ID"), (await r.json())["error"]["message"])
        async with http.get(f"{url}/metrics") as r:
            after_400 = await r.text()
    async with (
        fake_replica("error-503") as one,
        fake_replica("error-503") as other,
        running_proxy(config([one.url, other.url], policy=policy)) as url,
    ):
        async with http.post(f"{url}/v1/chat/completions", json=body, headers=session) as r:
            failed = (r.status, r.headers.get("X-Session-ID"), (await r.json())["error"]["message"])
            retry_after = r.headers.get("Retry-After")  # added, as on the proxy's own 503s
        async with http.get(f"{url}/metrics") as r:
            after_503 = await r.text()
    assert refused == (400, "relayed-errors", "max_tokens must be at least 1")
    route = "/v1/chat/completions"
    assert _metric(after_400, "saga_calls_total", route=route, status="400") == 1
    assert _metric(after_400, "saga_responses_total", replica=refusing.url, status="400") == 1
    assert failed == (503, "relayed-errors", "overloaded") and retry_after == "1"
    assert one.calls == other.calls == 1  # tried on each replica once: one retry
    assert _metric(after_503, "saga_calls_total", route=route, status="503") == 1
    assert _metric(after_503, "saga_retries_total") == 1


async def test_every_503_says_when_to_retry(http: aiohttp.ClientSession) -> None:
    """`retry_after_s` (docs/config.md) is on every 429 and 503 the proxy answers: the routes passed through
    to a replica and `/v1/models` said nothing when no replica could answer them."""
    async with fake_replica() as gone:
        dead = gone.url
    async with running_proxy(config([dead], retry_after_s=2.5)) as url:
        answers = []
        for method, path, body in (
            ("GET", "/v1/models", None),
            ("POST", "/v1/embeddings", {"model": "fake", "input": "hi"}),
            ("POST", "/tokenize", {"model": "fake", "prompt": "hi"}),
            ("POST", "/v1/chat/completions", {"model": "fake", "messages": MESSAGES}),
        ):
            async with http.request(method, url + path, json=body) as r:
                answers.append(
                    (path, r.status, r.headers.get("Retry-After"), assert_openai_error(await r.json()))
                )
    assert [(path, status, after) for path, status, after, _ in answers] == [
        (path, 503, "3") for path, _, _, _ in answers
    ]


async def test_headers_a_client_names_in_connection_stay_at_the_proxy(http: aiohttp.ClientSession) -> None:
    """RFC 9110 7.6.1: a header the Connection header names is for this hop only; it reached the replica."""
    headers = {"Connection": "keep-alive, X-Hop-Secret", "X-Hop-Secret": "s3cret", "X-Kept": "yes"}
    body = {"messages": MESSAGES}
    async with (
        fake_replica() as replica,
        running_proxy(config([replica.url])) as url,
        http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r,
    ):
        assert r.status == 200
    (seen,) = replica.headers
    names = {name.lower() for name in seen}
    assert "x-hop-secret" not in names and seen.get("X-Kept") == "yes"


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate,chunked"])
async def test_a_transfer_coding_the_proxy_cannot_decode_is_a_501(
    monkeypatch: pytest.MonkeyPatch, coding: str, server: str
) -> None:
    """The parsers dechunk but do not decompress: the gzip bytes went on as the JSON body (RFC 9112 6.1); the
    aiohttp server served it and kept the connection."""
    monkeypatch.setattr(proxy_server, "server_kind", lambda config: server)
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: " + coding.encode() + b"\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501 ") and replica.calls == 0
    assert assert_openai_error(json.loads(body))["code"] == "unsupported_transfer_encoding"
