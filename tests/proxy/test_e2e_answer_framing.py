"""End-to-end over loopback, under both servers: how the proxy frames a replica's answer on its pooled
keep-alive connections. Each case failed before its fix:

- an interim answer (`100 Continue`, `103 Early Hints`) was taken as the final one: the client got a 100,
  the connection went back to the pool, and the real answer was read as the next call's, another client's;
- a `101 Switching Protocols` escaped the parser's error handling (a traceback) and was relayed as the answer;
- bytes a replica wrote on an idle pooled connection (or past its answer's end) were read as the next call's
  answer: that call waited for its first-byte timeout although the replica had answered it;
- a streamed tool-call name that is not UTF-8 ended the stream with a traceback, unterminated;
- a chunked answer's trailer fields were relayed as header fields (one replaced the Content-Type);
- a 5xx whose body stalled waited the first-byte timeout and relayed an empty "JSON" body; cut short, the same
  empty body.
- a 204 went out with `Content-Length: 0`, which RFC 9110 forbids (fast server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from proxy.server import running_proxy
from tests.proxy.fakes import config, raw_replica

Answer = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[None]]
SERVERS = pytest.mark.parametrize("server", ["fast", "aiohttp"])


def _whole(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %b\r\nContent-Type: application/json\r\n%bContent-Length: %d\r\n\r\n%b" % (
        status.encode(),
        extra,
        len(body),
        body,
    )


def _echo(body: bytes) -> bytes:
    """A chat answer naming the prompt it answers, so an answer handed to the wrong call shows."""
    prompt = json.loads(body)["messages"][0]["content"]
    answer = {
        "id": "c1",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": f"to {prompt}"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    return json.dumps(answer).encode()


def _replica(calls: Answer) -> Answer:
    """`calls` answers the calls; the probes get an empty 200."""

    async def answer(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        if head.startswith(b"GET"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        else:
            await calls(head, body, writer)

    return answer


async def _call(
    http: aiohttp.ClientSession, url: str, prompt: str, stream: bool = False
) -> tuple[int, dict[str, str], bytes]:
    body = {"model": "fake", "messages": [{"role": "user", "content": prompt}], "stream": stream}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers={"X-Session-ID": "s"}) as r:
        return r.status, dict(r.headers), await r.read()


async def _in_flight(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/saga/v1/state") as r:
        return int((await r.json())["in_flight"])


def _client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))


@contextlib.asynccontextmanager
async def _proxy_before(
    calls: Answer, server: str, **settings: Any
) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """The proxy (server `server`, `settings`) in front of one raw replica whose calls `calls` answers, and a
    client with a bounded timeout (a call the proxy fails to answer ends the test instead of hanging it)."""
    async with (
        _client() as http,
        raw_replica(_replica(calls)) as replica,
        running_proxy(config([replica], server=server, access_log=False, **settings)) as url,
    ):
        yield http, url


@SERVERS
async def test_interim_answers_are_skipped_and_each_client_gets_its_own_answer(server: str) -> None:
    async def calls(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # the final answer in a read of its own
        writer.write(_whole(_echo(body)))

    async with _proxy_before(calls, server) as (http, url):
        for prompt in ("alice", "bob", "carol"):  # on one pooled connection, one after another
            status, headers, body = await _call(http, url, prompt)
            assert status == 200, (status, body)
            assert json.loads(body)["choices"][0]["message"]["content"] == f"to {prompt}"
            assert "Link" not in headers  # the interim answer's fields are not the answer's
        assert await _in_flight(http, url) == 0


@SERVERS
async def test_a_protocol_switch_is_an_upstream_error_not_the_answer(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def calls(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")

    caplog.set_level(logging.WARNING)
    async with _proxy_before(calls, server) as (http, url):
        status, _, body = await _call(http, url, "switch")
        assert status in (502, 503), (status, body)
        assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}
        assert await _in_flight(http, url) == 0
    assert "Traceback" not in caplog.text and "Fatal error" not in caplog.text
    assert "switched protocols" in caplog.text


@SERVERS
@pytest.mark.parametrize("when", ["while idle", "past its answer"])
async def test_bytes_a_replica_sent_unasked_never_reach_the_next_call(server: str, when: str) -> None:
    answered = 0

    async def calls(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        answered += 1
        stray = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        if answered > 1:
            writer.write(_whole(_echo(body)))
        elif when == "past its answer":  # in the same write as the answer
            writer.write(_whole(_echo(body)) + stray)
        else:
            writer.write(_whole(_echo(body)))
            await writer.drain()
            await asyncio.sleep(0.1)  # the proxy has pooled the connection by now
            writer.write(stray)

    # before, the second call waited for the first-byte timeout, past the client's
    async with _proxy_before(calls, server, first_byte_timeout_s=60.0) as (http, url):
        for prompt in ("first", "second", "third"):
            status, _, body = await _call(http, url, prompt)
            assert status == 200, (prompt, status, body)
            assert json.loads(body)["choices"][0]["message"]["content"] == f"to {prompt}"
            await asyncio.sleep(0.3)
        assert await _in_flight(http, url) == 0


@SERVERS
async def test_a_stream_whose_tool_name_is_not_utf8_is_relayed_whole(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    events = [
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t1","type":"function",'
        b'"function":{"name":"run\xfftests","arguments":""}}]}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n',
        b"data: [DONE]\n\n",
    ]

    async def calls(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for event in events:
            writer.write(b"%x\r\n%b\r\n" % (len(event), event))
        writer.write(b"0\r\n\r\n")

    caplog.set_level(logging.ERROR)
    async with _proxy_before(calls, server) as (http, url):
        status, _, body = await _call(http, url, "tools", stream=True)
        assert status == 200
        assert body == b"".join(events)
        assert await _in_flight(http, url) == 0
    assert "Traceback" not in caplog.text and not caplog.records


@SERVERS
async def test_trailer_fields_are_not_relayed_as_header_fields(server: str) -> None:
    async def calls(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        answer = _echo(body)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Trailer: X-Checksum\r\n\r\n%x\r\n%b\r\n"
            b"0\r\nX-Checksum: 1234\r\nContent-Type: text/plain\r\n\r\n" % (len(answer), answer)
        )

    async with _proxy_before(calls, server) as (http, url):
        for prompt in ("one", "two"):
            status, headers, body = await _call(http, url, prompt)
            assert status == 200
            assert headers["Content-Type"].startswith("application/json")
            assert "X-Checksum" not in headers
            assert json.loads(body)["choices"][0]["message"]["content"] == f"to {prompt}"


@SERVERS
@pytest.mark.parametrize("how", ["stalls", "breaks off"])
async def test_a_replica_error_whose_body_fails_is_the_proxys_own_error(server: str, how: str) -> None:
    async def calls(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n")
        writer.write(b'Content-Length: 100\r\n\r\n{"err')
        await writer.drain()
        if how == "stalls":
            await asyncio.sleep(30)
        else:
            writer.transport.abort()

    settings = {"max_retries": 1, "first_byte_timeout_s": 60.0, "stream_idle_timeout_s": 0.5}
    # before, a stalled body waited the first-byte timeout, past the client's
    async with _proxy_before(calls, server, **settings) as (http, url):
        status, _, body = await _call(http, url, "fails")
        assert status == 502, (status, body)
        error = json.loads(body)["error"]
        assert error["code"] == "upstream_error" and "answered 500" in error["message"]
        assert await _in_flight(http, url) == 0


@SERVERS
async def test_a_204_is_relayed_without_a_body_or_a_length_and_the_connection_stays_in_step(
    server: str,
) -> None:
    """RFC 9110: no Content-Length on a 204 (the fast server said `Content-Length: 0`)."""

    async def calls(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        if b"nothing" in body:
            writer.write(b"HTTP/1.1 204 No Content\r\nX-Replica: yes\r\n\r\n")
        else:
            writer.write(_whole(_echo(body)))

    async with _proxy_before(calls, server) as (http, url):
        status, headers, body = await _call(http, url, "nothing")
        assert (status, body, headers.get("X-Replica")) == (204, b"", "yes")
        assert "Content-Length" not in headers and "Transfer-Encoding" not in headers
        status, _, body = await _call(http, url, "after")  # the next answer is its own
        assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "to after"
        assert await _in_flight(http, url) == 0
