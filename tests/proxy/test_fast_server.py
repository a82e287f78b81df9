"""The fast server's HTTP layer over raw loopback sockets: keep-alive and pipelining, request framing
(chunked bodies, `Expect: 100-continue`, HTTP/1.0), its own refusals, the hand-off of other routes to the
aiohttp app, and a client hanging up mid-stream. The call logic itself is covered by the e2e suites, which run
under both servers (`SAGA_TEST_SERVER`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import socket
from urllib.parse import urlsplit

import aiohttp
import httptools
import pytest
from aiohttp import web

from loadtests.bench.call_cost import _KEY, FakeTransport, Harness, answer_segments, request_bytes
from proxy.config import ProxyConfig
from proxy.fast_server import MAX_LOGGED_TARGET
from proxy.http_limits import MAX_HEAD_BYTES
from proxy.scheduler import ConfigError
from proxy.server import running_proxy
from proxy.upstream_pool import _Connection
from tests.proxy.fakes import SSE_EVENT, config, fake_replica, raw_replica, replica_app, serving

pytestmark = pytest.mark.usefixtures("_fast_only")

CALL = b'{"model":"fake","messages":[{"role":"user","content":"hi"}]}'
STREAM_CALL = b'{"model":"fake","messages":[{"role":"user","content":"hi"}],"stream":true}'


@pytest.fixture
def _fast_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy import server

    monkeypatch.setattr(server, "server_kind", lambda config: "fast")


class _Answer:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


async def _read_answers(reader: asyncio.StreamReader, count: int, head: bool = False) -> list[_Answer]:
    """Reads `count` answers from one connection (httptools parses them, as a client would)."""
    answers: list[_Answer] = []
    current = _Answer()
    parser = httptools.HttpResponseParser(current)
    while len(answers) < count:
        data = await asyncio.wait_for(reader.read(65536), 10)
        if not data:
            parser.feed_data(b"")  # type: ignore[arg-type]
            break
        while data:
            try:
                parser.feed_data(data)
                data = b""
            except httptools.HttpParserError:
                raise
            if current.done:
                current.status = parser.get_status_code()
                answers.append(current)
                current = _Answer()
                parser = httptools.HttpResponseParser(current)
    return answers


def _request(path: str, body: bytes, extra: str = "", version: str = "1.1") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port)


async def test_pipelined_calls_are_answered_in_order_on_one_connection() -> None:
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        reader, writer = await _connect(url)
        writer.write(
            _request("/v1/chat/completions", CALL)
            + _request("/v1/chat/completions", STREAM_CALL)
            + b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answers = await _read_answers(reader, 3)
        writer.close()
    assert [a.status for a in answers] == [200, 200, 200]
    assert json.loads(answers[0].body)["choices"][0]["message"]["content"] == "hi"
    assert answers[1].headers["content-type"].startswith("text/event-stream")
    assert answers[1].headers["transfer-encoding"] == "chunked"
    assert answers[1].body.endswith(b"data: [DONE]\n\n") and b'"content":"hi"' in answers[1].body
    assert answers[0].headers["x-saga-replica"] == replica.url
    assert [m["id"] for m in json.loads(answers[2].body)["data"]] == ["fake"]  # handed to the aiohttp app
    assert replica.calls == 2


async def test_chunked_bodies_and_expect_continue_are_served() -> None:
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        reader, writer = await _connect(url)
        half = len(CALL) // 2
        chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, CALL[:half], len(CALL) - half, CALL[half:])
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(chunked)
        answers = await _read_answers(reader, 1)
        writer.close()
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    assert answers[0].status == 200 and b'"content":"hi"' in answers[0].body


async def test_a_kept_alive_connection_holds_nothing_of_a_request_it_answered() -> None:
    """Between calls a connection keeps no part of the last request (an agent's body of hundreds of kB, read
    in chunks: before, the chunks stayed on the connection until its next request began)."""
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        reader, writer = await _connect(url)
        half = len(CALL) // 2
        chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, CALL[:half], len(CALL) - half, CALL[half:])
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(chunked)
        answers = await _read_answers(reader, 1)
        open_connections = [c for c in gc.get_objects() if type(c).__name__ == "_ClientConnection"]
        held = [(c._url, c._headers, c._body) for c in open_connections if c.transport is not None]
        writer.close()
    assert answers[0].status == 200
    assert held and all(parts == ([], [], []) for parts in held)  # other tests' connections may linger here


async def test_a_closed_client_connection_is_freed_without_waiting_for_a_full_collection() -> None:
    """The proxy's full garbage collections are rare (proxy/server.py): a client connection that closed must
    not sit in a reference cycle with its parser (before, each stayed, with what it had read, until the next
    full collection)."""
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        gc.collect()
        gc.disable()
        try:
            for _ in range(20):
                reader, writer = await _connect(url)
                writer.write(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(CALL), CALL)
                )
                assert (await _read_answers(reader, 1))[0].status == 200
                writer.close()
                await writer.wait_closed()
            await asyncio.sleep(0.1)  # the server sees the closes
            alive = [c for c in gc.get_objects() if type(c).__name__ == "_ClientConnection"]
            closed = [c for c in alive if c.transport is None]
        finally:
            gc.enable()
    assert not closed, f"{len(closed)} closed client connections still alive"


async def test_an_absolute_form_request_target_is_served_as_its_path() -> None:
    """RFC 9112 3.2.2: a server must accept the absolute-form (`POST http://host/v1/...`), as a proxy's
    client may send it; before, the fast server looked the whole URL up as a path and answered 404."""
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        reader, writer = await _connect(url)
        call = _request("/v1/chat/completions", CALL).replace(b"POST /v1/", f"POST {url}/v1/".encode(), 1)
        writer.write(call + f"GET {url}/v1/models?x=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answers = await _read_answers(reader, 2)
        writer.close()
    assert [a.status for a in answers] == [200, 200]
    assert json.loads(answers[0].body)["choices"][0]["message"]["content"] == "hi"
    assert [m["id"] for m in json.loads(answers[1].body)["data"]] == ["fake"]  # handed to the aiohttp app
    assert replica.calls == 1


async def test_an_http_1_0_request_needs_no_host() -> None:
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        reader, writer = await _connect(url)
        body = CALL
        writer.write(
            b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert raw.startswith(b"HTTP/1.1 200") and b'"content":"hi"' in raw


async def test_an_http_1_0_expectation_is_ignored() -> None:
    """RFC 9110 10.1.1: no interim 100 to an HTTP/1.0 client, and no 417 for one it would not understand."""
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        for expectation in (b"100-continue", b"something-else"):
            reader, writer = await _connect(url)
            writer.write(
                b"POST /v1/chat/completions HTTP/1.0\r\nExpect: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (expectation, len(CALL), CALL)
            )
            raw = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert raw.startswith(b"HTTP/1.1 200") and b"100 Continue" not in raw
    assert replica.calls == 2


async def test_an_http_1_0_stream_ends_with_the_connection() -> None:
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        reader, writer = await _connect(url)
        writer.write(_request("/v1/chat/completions", STREAM_CALL, version="1.0"))
        raw = await asyncio.wait_for(reader.read(), 10)  # returns only once the proxy closes
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding" not in head
    assert body.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n", 413),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n", 400),
        (b"NOT HTTP AT ALL\x00\r\n\r\n", 400),
        (b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 400),  # RFC 9112 3.2
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + b"X-A: yyyy\r\n" * 200 + b"\r\n", 431),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: yyyy\r\nContent-Length: 2\r\n\r\n{}",
            417,
        ),
    ],
    ids=[
        "declared-too-big",
        "header-too-long",
        "garbage",
        "http-1.1-without-host",
        "too-many-headers",
        "unknown-expectation",
    ],
)
async def test_the_http_layers_refusals_are_openai_errors_that_close(raw: bytes, status: int) -> None:
    async with fake_replica() as replica, running_proxy(config([replica.url], max_body_bytes=1000)) as url:
        reader, writer = await _connect(url)
        writer.write(raw)
        data = await asyncio.wait_for(reader.read(), 10)  # the proxy closes after its refusal
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode())
    assert b"Connection: close" in head
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert b"yyyy" not in data  # nothing the client sent is quoted back
    assert replica.calls == 0


async def test_a_body_growing_past_the_limit_is_a_413() -> None:
    async with fake_replica() as replica, running_proxy(config([replica.url], max_body_bytes=1000)) as url:
        reader, writer = await _connect(url)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n" % (2000, b" " * 2000))
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert data.startswith(b"HTTP/1.1 413") and b'"invalid_request_error"' in data


async def test_a_client_hanging_up_mid_stream_aborts_the_call_upstream() -> None:
    async with fake_replica("stall-stream") as replica, running_proxy(config([replica.url])) as url:
        reader, writer = await _connect(url)
        writer.write(_request("/v1/chat/completions", STREAM_CALL))
        await asyncio.wait_for(reader.readuntil(b'"content":"hi"'), 10)  # the first event came through
        writer.close()
        await asyncio.wait_for(replica.cancelled.wait(), 10)  # the replica saw the proxy hang up
        reader2, writer2 = await _connect(url)
        writer2.write(b"GET /saga/v1/state HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(50):  # the proxy notices the hang-up on its own loop turn
            state = json.loads((await _read_answers(reader2, 1))[0].body)
            if state["in_flight"] == 0:
                break
            await asyncio.sleep(0.05)
            writer2.write(b"GET /saga/v1/state HTTP/1.1\r\nHost: x\r\n\r\n")
        writer2.close()
    assert state["in_flight"] == 0


async def test_client_api_keys_are_checked_on_the_fast_path() -> None:
    keys = {"k-alpha": "alpha"}
    async with fake_replica() as replica, running_proxy(config([replica.url], api_keys=keys)) as url:
        reader, writer = await _connect(url)
        writer.write(
            _request("/v1/chat/completions", CALL)
            + _request("/v1/chat/completions", CALL, "Authorization: Bearer k-alpha\r\n")
        )
        answers = await _read_answers(reader, 2)
        writer.close()
    assert answers[0].status == 401 and json.loads(answers[0].body)["error"]["code"] == "invalid_api_key"
    assert answers[1].status == 200
    assert "k-alpha" not in replica.headers[0].get("Authorization", "")  # the client key stays here


def test_an_unknown_server_kind_fails_at_start_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="server"):
        ProxyConfig(replicas=["http://a"], server="nginx").validate()


async def test_an_idle_keep_alive_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy import fast_server

    monkeypatch.setattr(fast_server, "KEEP_ALIVE_S", 0.2)
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        reader, writer = await _connect(url)
        writer.write(_request("/v1/chat/completions", CALL))
        answers = await _read_answers(reader, 1)
        rest = await asyncio.wait_for(reader.read(), 10)  # b"" once the proxy closes the idle connection
        slow_reader, slow_writer = await _connect(url)
        slow_writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and never finishes
        slow_rest = await asyncio.wait_for(slow_reader.read(), 10)
        writer.close()
        slow_writer.close()
    assert answers[0].status == 200 and rest == b"" and slow_rest == b""


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_an_upgrade_offer_is_declined_and_the_body_read_whole(framing: str) -> None:
    """`curl --http2` on http:// offers h2c. httptools stops at the end of an upgrading request's head, and
    the body was taken from that one read only: a body arriving in later reads was cut ("not valid JSON"), a
    chunked one empty. The offer is declined now and the connection goes on in HTTP/1.1."""
    offer = (
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
    )
    body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "x" * 200_000}]}).encode()
    if framing == "length":
        head = _request("/v1/chat/completions", b"", offer).removesuffix(b"Content-Length: 0\r\n\r\n")
        first, rest = head + b"Content-Length: %d\r\n\r\n" % len(body) + body[:1000], body[1000:]
    else:
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{offer}Transfer-Encoding: chunked\r\n\r\n"
        first = head.encode() + b"%x\r\n%b\r\n" % (1000, body[:1000])
        rest = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body) - 1000, body[1000:])
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        reader, writer = await _connect(url)
        writer.write(first)
        await writer.drain()
        await asyncio.sleep(0.1)  # the rest in reads of its own
        writer.write(rest)
        writer.write(_request("/v1/chat/completions", CALL))  # and the connection goes on
        answers = await _read_answers(reader, 2)
        writer.close()
    assert [a.status for a in answers] == [200, 200], answers[0].body
    assert b"101" not in answers[0].body and b'"content":"hi"' in answers[0].body
    assert replica.calls == 2


async def test_an_interim_100_waits_for_the_answer_going_out_before_it() -> None:
    """A pipelined request with `Expect: 100-continue` whose head comes while an earlier stream is still going
    out: its `100 Continue` was written at once, inside the stream's chunked body (a chunk size the client
    cannot parse). It now goes out once the earlier answer is out, and the request is served."""
    release = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(SSE_EVENT)
        await release.wait()
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = replica_app(stream)
    async with serving(app) as replica, running_proxy(config([replica])) as url:
        reader, writer = await _connect(url)
        writer.write(_request("/v1/chat/completions", STREAM_CALL))
        first = await asyncio.wait_for(reader.readuntil(b"\n\n"), 10)  # the stream's head and first event
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(STREAM_CALL)}\r\n"
        writer.write(head.encode() + b"Expect: 100-continue\r\n\r\n")
        try:
            with contextlib.suppress(TimeoutError):  # before the fix the 100 came here, inside the stream
                while True:  # whatever comes until a second passes with nothing
                    first += await asyncio.wait_for(reader.read(65536), 1)
        finally:
            release.set()
        assert b"100 Continue" not in first
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"), 10)
        writer.write(STREAM_CALL)
        second = await _read_answers(reader, 1)
        writer.close()
    answers = await _read_answers(_fed(first + rest.removesuffix(b"HTTP/1.1 100 Continue\r\n\r\n")), 1)
    assert answers[0].status == 200 and answers[0].body.endswith(b"data: [DONE]\n\n")
    assert second[0].status == 200 and second[0].body.endswith(b"data: [DONE]\n\n")


def _fed(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_a_header_field_that_never_ends_is_refused() -> None:
    """httptools hands a field over only once it is whole: a field that never ended was buffered without a
    limit (168 MB: +227 MiB, and joining its pieces stalled the loop for 17 s). Refused past the head's
    bound now (`MAX_HEAD_BYTES`, 64 KiB)."""
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        reader, writer = await _connect(url)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-A: ")
        await writer.drain()
        await asyncio.sleep(0.1)  # (the request begins in a read of its own)
        writer.write(b"a" * 60_000)  # never a line end ...
        await writer.drain()
        await asyncio.sleep(0.2)  # (read by the proxy, so the refusal leaves nothing unread: no reset)
        writer.write(b"a" * 8_000)  # ... past the head's bound
        data = await asyncio.wait_for(reader.read(), 10)  # the proxy closes after its refusal
        writer.close()
    assert data.startswith(b"HTTP/1.1 400") and b"header too long" in data
    assert replica.calls == 0


async def test_a_read_ending_one_head_and_starting_many_more_is_not_one_long_head() -> None:
    """A pipelining client's read can end one request's head, hold many whole requests and stop inside another
    request's head. It was counted as one head past `MAX_HEAD_BYTES` and the connection refused (400 "header
    too long"): reads of 256 KiB, as once reading resumes after a pause, did it. A field that never ends is
    still refused, over the reads that follow."""
    harness = Harness("round-robin")
    try:
        body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        request = _request("/v1/chat/completions", body)
        cut = request.index(b"Host: ") + 6  # inside a field's value
        client = harness.client
        client.data_received(request[:cut])
        client.data_received(request[cut:] + request * (2 * MAX_HEAD_BYTES // len(request)) + request[:cut])
        assert not client._refused
        for _ in range(MAX_HEAD_BYTES // 4096 + 1):  # the last request's head never ends
            client.data_received(b"X" * 4096)
        assert client._refused
    finally:
        harness.close()


async def test_trailer_fields_of_a_chunked_request_are_not_its_headers() -> None:
    """A chunked request's trailer fields were appended to its header fields: an `Authorization` trailer
    authenticated the call, a `Content-Encoding` trailer skipped the 415 (RFC 9110 6.5.1: not headers)."""
    keys = {"k-alpha": "alpha"}
    trailers = b"Authorization: Bearer k-alpha\r\nX-Session-ID: from-trailer\r\n"
    chunked = b"%x\r\n%b\r\n0\r\n%b\r\n" % (len(CALL), CALL, trailers)
    async with fake_replica() as replica, running_proxy(config([replica.url], api_keys=keys)) as url:
        reader, writer = await _connect(url)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(chunked)
        answers = await _read_answers(reader, 1)
        writer.close()
    assert answers[0].status == 401 and replica.calls == 0


async def test_a_request_arriving_slowly_after_an_idle_time_gets_the_whole_keep_alive_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The keep-alive timer counted from the last answer: a request begun after some idle time and sent over
    a few seconds was cut when the timer fired mid-request (no answer, a broken pipe)."""
    from proxy import fast_server

    monkeypatch.setattr(fast_server, "KEEP_ALIVE_S", 2.0)
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        reader, writer = await _connect(url)
        writer.write(_request("/v1/chat/completions", CALL))
        first = await _read_answers(reader, 1)
        await asyncio.sleep(1.2)  # idle, within the keep-alive time
        request = _request("/v1/chat/completions", CALL)
        writer.write(request[:20])  # the next request begins ...
        await asyncio.sleep(1.5)  # ... and arrives slowly, past the keep-alive time counted from the answer
        writer.write(request[20:])
        second = await _read_answers(reader, 1)
        writer.close()
    assert first[0].status == 200 and second[0].status == 200


async def test_a_client_pipelining_without_reading_is_held_back() -> None:
    """A client that pipelines requests and reads none of the answers: every request was parsed and queued
    and every answer buffered (42 MB of requests: +555 MiB). Reading now pauses while answers pile up or
    many requests wait, so the client's own sends stop."""
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 1024
    limit = 24 * 1024 * 1024
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        with socket.socket() as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, (parts.hostname, parts.port))
            sent, blocked = 0, False
            while sent < limit:
                try:
                    await asyncio.wait_for(loop.sock_sendall(sock, request), 3)
                except TimeoutError:
                    blocked = True  # the proxy stopped reading: the kernel's buffers are full
                    break
                sent += len(request)
    del replica
    assert blocked, f"sent {sent} bytes of requests without reading an answer"


async def test_a_client_that_reads_nothing_is_let_go_after_the_idle_timeout() -> None:
    """A client that stopped reading a stream held its call in flight (and its KV reservation) for as long
    as it kept the connection open; it is taken as gone once it read nothing for `stream_idle_timeout_s`."""
    event = b"data: " + json.dumps({"choices": [{"delta": {"content": "x" * 60_000}}]}).encode() + b"\n\n"

    async def answer(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        if head.startswith(b"GET"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(1000):  # ~60 MB, far more than the buffers between here and a client reading nothing
            writer.write(b"%x\r\n%b\r\n" % (len(event), event))
            await writer.drain()

    async with (
        raw_replica(answer) as replica,
        running_proxy(config([replica], stream_idle_timeout_s=0.5)) as url,
    ):
        _, writer = await _connect(url)
        writer.write(_request("/v1/chat/completions", STREAM_CALL))  # and never reads
        reader2, writer2 = await _connect(url)
        for _ in range(100):  # (bounded) until the proxy lets the silent client go
            await asyncio.sleep(0.1)
            writer2.write(b"GET /saga/v1/state HTTP/1.1\r\nHost: x\r\n\r\n")
            state = json.loads((await _read_answers(reader2, 1))[0].body)
            if state["in_flight"] == 0:
                break
        writer.close()
        writer2.close()
    assert state["in_flight"] == 0


async def test_a_field_given_twice_is_read_as_its_first_line_on_every_route() -> None:
    """The fast server served a call with a repeated field's first line (as aiohttp does) but handed other
    routes to the app with the last: two `Authorization` lines were read differently by the two servers."""
    async with fake_replica() as replica, running_proxy(config([replica.url], admin_token="tok")) as url:
        reader, writer = await _connect(url)
        for first, second in (("wrong", "tok"), ("tok", "wrong")):
            writer.write(
                f"GET /saga/v1/state HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {first}\r\n"
                f"Authorization: Bearer {second}\r\n\r\n".encode()
            )
        answers = await _read_answers(reader, 2)
        writer.close()
    assert [a.status for a in answers] == [401, 200]  # what `--server aiohttp` answers


async def test_with_other_calls_in_flight_a_request_and_an_answer_wait_for_the_end_of_the_turn() -> None:
    """Writes that go out together wake a replica (or a client holding several connections) once, not once a
    call: while the process has other calls in flight, a request to a replica and a whole answer are
    written at the end of the loop's turn, whole; a lone call's are written at once (nothing would join
    them)."""
    harness = Harness("round-robin")
    try:
        other_upstream, other_upstream_out = _Connection(), FakeTransport()
        other_upstream.connection_made(other_upstream_out)  # type: ignore[arg-type]
        harness.pool._put(_KEY, other_upstream)  # lent first (the most recently pooled)
        other_client, other_client_out = harness.server(), FakeTransport()
        other_client.connection_made(other_client_out)  # type: ignore[arg-type]
        upstream_out, client_out = harness.upstream_transport.written, harness.client_transport.written
        request, (answer,) = request_bytes(stream=False), answer_segments(stream=False, segments="one")

        harness.client.data_received(request)  # alone: at once
        assert len(other_upstream_out.written) == 1
        other_client.data_received(request)  # the first is in flight: at the end of the turn
        assert upstream_out == []
        await asyncio.sleep(0)
        assert len(upstream_out) == 1 and upstream_out[0].startswith(b"POST /v1/chat/completions HTTP/1.1")

        other_upstream.data_received(answer)  # the first call's answer, the second still in flight
        assert client_out == []
        await asyncio.sleep(0)
        assert len(client_out) == 1 and client_out[0].startswith(b"HTTP/1.1 200 OK\r\n")
        harness.upstream.data_received(answer)  # the second's, alone now: at once
        assert len(other_client_out.written) == 1 and other_client_out.written[0].startswith(b"HTTP/1.1 200 ")
        body = client_out[0].partition(b"\r\n\r\n")[2]
        assert body and body == other_client_out.written[0].partition(b"\r\n\r\n")[2]
    finally:
        harness.close()


async def test_an_access_line_shows_a_long_request_target_cut(caplog: pytest.LogCaptureFixture) -> None:
    """A 60 KB query string of quotes made one 240 KB access line (each quote escaped, then JSON-escaped
    again under `log_format: json`), which log shippers cut into invalid pieces: the target is cut at
    MAX_LOGGED_TARGET characters, saying how much was left out."""
    caplog.set_level(logging.INFO, logger="saga.access")
    target = "/v1/chat/completions?q=" + '"' * 60_000
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        reader, writer = await _connect(url)
        writer.write(_request(target, CALL))
        (answer,) = await _read_answers(reader, 1)
        writer.close()
    assert answer.status == 200
    (line,) = [r.getMessage() for r in caplog.records if r.name == "saga.access"]
    assert len(line) < 2 * MAX_LOGGED_TARGET + 200
    assert f"...(+{len(target) - MAX_LOGGED_TARGET} chars)" in line and " 200 " in line


async def test_refusals_of_unknown_routes_and_methods_leave_no_cycles_behind() -> None:
    """aiohttp's own 404 and 405 built, per request, a route holding its exception and a bound method of
    itself: cycles that only the proxy's rare full collections freed, so a flood of unknown routes (open to
    any client, even with API keys: `POST /health`) held 500-650 bytes each until the next one
    (docs/results/reliability-s41/unknown_routes_memory.sh). The proxy answers them itself now, in the same
    shape."""
    async with (
        fake_replica() as replica,
        running_proxy(config([replica.url])) as url,
        aiohttp.ClientSession() as http,
    ):
        gc.collect()
        gc.disable()
        try:
            for _ in range(30):
                async with http.get(f"{url}/v1/nope") as r:
                    missing = (r.status, await r.json())
                async with http.post(f"{url}/health") as r:
                    wrong = (r.status, r.headers.get("Allow"), await r.json())
            await asyncio.sleep(0.1)
            kept = [o for o in gc.get_objects() if type(o).__name__ in ("MatchInfoError", "SystemRoute")]
        finally:
            gc.enable()
    assert missing == (
        404,
        {"error": {"message": "404: Not Found", "type": "not_found_error", "param": None, "code": None}},
    )
    assert wrong[0] == 405 and wrong[1] is not None and "GET" in wrong[1].split(",")
    assert wrong[2]["error"]["message"] == "405: Method Not Allowed"
    assert not kept, f"{len(kept)} refusals' routes still alive"
