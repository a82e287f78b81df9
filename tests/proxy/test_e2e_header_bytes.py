"""End-to-end over loopback, under both client-facing servers: header values that are not ASCII (HTTP allows
any byte but CR, LF and NUL in one: RFC 9110 5.5's obs-text) are passed on to the replica byte for byte, and
never make the proxy fail (a 500 with a traceback in its log, before these tests)."""

from __future__ import annotations

import asyncio
import json

import pytest

from proxy import server
from proxy.config import ProxyConfig
from proxy.server import running_proxy
from tests.proxy.fakes import config, fake_replica, raw_replica

# A valid UTF-8 "é" and a byte that is not UTF-8 at all; aiohttp (the fake replica) reads them as "é" and a
# lone surrogate, so the value it sees tells exactly which bytes the proxy sent.
NOTE = b"caf\xc3\xa9 \xff"
NOTE_AS_READ = "café \udcff"


@pytest.fixture(params=["fast", "aiohttp"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(server, "server_kind", lambda config: request.param)
    return str(request.param)


async def _ask(
    url: str, method: str, path: str, headers: dict[bytes, bytes], body: bytes = b""
) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers.items())
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    writer.write(head.encode() + lines + b"\r\n" + body)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


async def test_header_bytes_reach_the_replica_as_sent(kind: str) -> None:
    call = b'{"model":"fake","messages":[{"role":"user","content":"hi"}]}'
    async with fake_replica() as replica, running_proxy(config([replica.url], access_log=False)) as url:
        for _ in range(100):  # until the health loop has read the replica's model list
            if (await _ask(url, "POST", "/tokenize", {}, b'{"model":"fake","prompt":"x"}'))[0] == 200:
                break
            await asyncio.sleep(0.05)
        note = {b"X-Client-Note": NOTE, b"User-Agent": b"agent \xfe"}
        called = await _ask(url, "POST", "/v1/chat/completions", note, call)
        tokenized = await _ask(url, "POST", "/tokenize", note, b'{"model":"fake","prompt":"x"}')
        state = await _ask(url, "GET", "/saga/v1/state", {})
    assert called[0] == 200, called
    assert tokenized[0] == 200, tokenized
    assert replica.headers[-1]["X-Client-Note"] == NOTE_AS_READ
    assert replica.headers[-1]["User-Agent"] == "agent \udcfe"
    assert replica.passthrough_headers[-1]["X-Client-Note"] == NOTE_AS_READ
    assert json.loads(state[1])["in_flight"] == 0


async def test_an_api_key_or_admin_token_that_is_not_utf8_is_a_401(kind: str) -> None:
    cfg = ProxyConfig(
        replicas=[], port=0, seed=1, access_log=False, api_keys={"key-a": "alpha"}, admin_token="sekret"
    )
    async with fake_replica() as replica:
        cfg.replicas = [replica.url]
        async with running_proxy(cfg) as url:
            call = b'{"model":"fake","messages":[{"role":"user","content":"hi"}]}'
            answers = [
                await _ask(
                    url, "POST", "/v1/chat/completions", {b"Authorization": b"Bearer key-a\xff"}, call
                ),
                await _ask(url, "GET", "/v1/models", {b"Authorization": b"Bearer \xff"}),
                await _ask(url, "GET", "/saga/v1/state", {b"Authorization": b"Bearer sekret\xff"}),
            ]
            ok = await _ask(url, "GET", "/saga/v1/state", {b"Authorization": b"Bearer sekret"})
    assert [status for status, _ in answers] == [401, 401, 401], answers
    assert all(json.loads(body)["error"]["code"] == "invalid_api_key" for _, body in answers)
    assert ok[0] == 200


# The replica's header: valid UTF-8 ("é", which aiohttp's writer sends as such) and, on its own line, a byte
# that is not UTF-8 (which no aiohttp response can carry: it writes header values as UTF-8).
ANSWER_NOTE = b"caf\xc3\xa9"
ANSWER_ODD = b"agent \xff"


async def _noting(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
    """A replica on a raw socket, so its header bytes are exactly these: GETs (health,
    metrics, models) answer plainly; every POST answers a small JSON object with `X-Replica-Note: ANSWER_NOTE`
    and `X-Replica-Odd: ANSWER_ODD`."""
    if head.startswith(b"GET /v1/models"):
        answer, extra = b'{"object":"list","data":[{"id":"fake","object":"model"}]}', b""
    elif head.startswith(b"GET"):
        answer, extra = b"", b""
    else:
        answer = b'{"object":"list","model":"fake","data":[{"index":0}]}'
        extra = b"X-Replica-Note: " + ANSWER_NOTE + b"\r\nX-Replica-Odd: " + ANSWER_ODD + b"\r\n"
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(answer)
        + answer
    )


def _header(answer: bytes, name: bytes) -> bytes | None:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.lower() == name.lower():
            return value.strip()
    return None


async def _ask_raw(url: str, path: str, body: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    writer.write(head.encode() + body)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_header_bytes_reach_the_client_as_the_replica_sent_them(kind: str) -> None:
    """On every route, whichever server answers it: valid UTF-8 byte for byte (it reached the client as
    "cafÃ©" from the routes aiohttp answers), and a byte that is not UTF-8 exactly where the fast server
    relays the answer, as U+FFFD where aiohttp writes it (it cannot write that byte), never a failure."""
    call = b'{"model":"fake","messages":[{"role":"user","content":"hi"}]}'
    async with raw_replica(_noting) as replica, running_proxy(config([replica], access_log=False)) as url:
        for _ in range(100):  # until the health loop has read the replica's model list
            tokenized = await _ask_raw(url, "/tokenize", b'{"model":"fake","prompt":"x"}')
            if tokenized.startswith(b"HTTP/1.1 200"):
                break
            await asyncio.sleep(0.05)
        called = await _ask_raw(url, "/v1/chat/completions", call)
    assert called.startswith(b"HTTP/1.1 200") and tokenized.startswith(b"HTTP/1.1 200")
    assert _header(called, b"X-Replica-Note") == ANSWER_NOTE
    assert _header(tokenized, b"X-Replica-Note") == ANSWER_NOTE
    odd_by_aiohttp = "agent \ufffd".encode()
    assert _header(called, b"X-Replica-Odd") == (ANSWER_ODD if kind == "fast" else odd_by_aiohttp)
    assert _header(tokenized, b"X-Replica-Odd") == odd_by_aiohttp
