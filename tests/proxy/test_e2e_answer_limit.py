"""End-to-end over loopback: a replica's whole answer larger than `max_answer_bytes` is not held in memory
without limit: the client gets an OpenAI-style 502, the call's accounting is released once, the upstream
connection is dropped, and the proxy goes on serving. Under both servers, on both relay paths (the inline
relay on a pooled connection, the coroutine path on a fresh one), with and without a Content-Length."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.server import running_proxy
from tests.proxy.fakes import OK_JSON, config, read_request_whole

LIMIT = 100_000
BIG = 1_000_000  # ten times the limit


@contextlib.asynccontextmanager
async def _oversized_replica() -> AsyncIterator[tuple[str, list[str]]]:
    """Answers /health; a call whose prompt says "big" gets BIG bytes of JSON (with a Content-Length),
    "big-chunked" the same chunked, any other the usual small answer. Yields its URL and what each
    connection saw end (`dropped`: the proxy hung up while the answer was being written)."""
    ends: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, body = await read_request_whole(reader)
                if head.startswith(b"GET"):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                elif b"big-chunked" in body:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                    writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
                    piece = b" " * 10_000
                    for _ in range(BIG // len(piece)):
                        writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                        await writer.drain()
                    writer.write(b"2\r\n{}\r\n0\r\n\r\n")
                elif b"big" in body:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                    writer.write(b"Content-Length: %d\r\n\r\n{" % (BIG + 2))
                    for _ in range(100):
                        writer.write(b" " * (BIG // 100))
                        await writer.drain()
                    writer.write(b"}")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                    writer.write(b"Content-Length: %d\r\n\r\n%b" % (len(OK_JSON), OK_JSON))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            ends.append("dropped")
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", ends
    finally:
        server.close()
        await server.wait_closed()


async def _errors(http: aiohttp.ClientSession, url: str, cause: str) -> float:
    async with http.get(f"{url}/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(f'saga_errors_total{{cause="{cause}"}}'):
                return float(line.split()[1])
    return 0.0


async def _call(http: aiohttp.ClientSession, url: str, prompt: str) -> tuple[int, Any]:
    body = {"model": "fake", "messages": [{"role": "user", "content": prompt}]}
    async with http.post(f"{url}/v1/chat/completions", json=body) as r:
        return r.status, json.loads(await r.read())


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_an_oversized_whole_answer_is_a_502_released_once(server: str) -> None:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
        _oversized_replica() as (replica, ends),
        running_proxy(config([replica], max_answer_bytes=LIMIT, server=server)) as url,
    ):
        status, answer = await _call(http, url, "small")  # its connection goes back to the pool
        assert status == 200 and answer["choices"][0]["message"]["content"] == "hi"
        # On the pooled connection (the fast server relays it inline), then on a fresh one (the first was
        # dropped): the coroutine path.
        for prompt in ("big-chunked", "big"):
            status, answer = await _call(http, url, prompt)
            assert status == 502
            error = answer["error"]
            assert error["code"] == "upstream_answer_too_large"
            assert str(LIMIT) in error["message"] and set(error) == {"message", "type", "param", "code"}
        async with http.get(f"{url}/saga/v1/state") as r:
            assert (await r.json())["in_flight"] == 0  # each finish reported (a second one would go below 0)
        assert await _errors(http, url, "upstream_answer_too_large") == 2.0
        assert await _errors(http, url, "upstream_mid_answer") == 0.0  # the replica did not fail
        # counted by the status the client got (as 200s, the dashboard's "answers by status" showed them as
        # successes: the forty-fifth session's review of the deployment files)
        async with http.get(f"{url}/metrics") as r:
            lines = (await r.text()).splitlines()
        series = {ln.split()[0]: float(ln.split()[1]) for ln in lines if ln.startswith("saga_")}
        calls = {k: v for k, v in series.items() if k.startswith("saga_calls_total{")}
        responses = {k: v for k, v in series.items() if k.startswith("saga_responses_total{")}
        route = "/v1/chat/completions"
        assert calls.get(f'saga_calls_total{{route="{route}",status="502"}}') == 2.0, calls
        assert calls.get(f'saga_calls_total{{route="{route}",status="200"}}') == 1.0, calls
        assert sum(v for k, v in responses.items() if 'status="502"' in k) == 2.0, responses
        for _ in range(100):  # bounded wait for the replica to see the hang-ups
            if len(ends) >= 2:
                break
            await asyncio.sleep(0.05)
        assert ends == ["dropped", "dropped"]  # neither oversized answer was read to its end
        status, answer = await _call(http, url, "small")  # the proxy and the replica go on
        assert status == 200 and answer["choices"][0]["message"]["content"] == "hi"


def test_max_answer_bytes_must_be_positive() -> None:
    from proxy.scheduler import ConfigError

    with pytest.raises(ConfigError, match="max_answer_bytes"):
        config(["http://127.0.0.1:1"], max_answer_bytes=0).validate()
