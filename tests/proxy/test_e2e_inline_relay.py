"""End-to-end: a call relayed from the connections' callbacks (proxy/inline_relay.py: the fast server's common
path, once a pooled connection to the replica is idle) keeps the coroutine path's behaviour: a client that
hangs up mid-stream aborts the call upstream and releases its accounting once; a client that reads slowly gets
a long stream whole (the relay pauses the replica instead of buffering or dropping)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from proxy.server import running_proxy
from tests.proxy.fakes import config, fake_replica, raw_replica

MESSAGES = [{"role": "user", "content": "hello"}]
EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"x" * 1000 + b'"}}]}\n\n'
EVENTS = 8000  # ~8 MB: more than loopback socket buffers hold, so a client that does not read holds it up


async def _state(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/saga/v1/state") as r:
        result: dict[str, Any] = await r.json()
        return result


async def _metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(f"{url}/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not on /metrics")


async def test_a_client_hanging_up_mid_stream_aborts_the_call_and_releases_it_once() -> None:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
        fake_replica("stall-stream") as replica,
        running_proxy(config([replica.url])) as url,
    ):
        # A whole answer first: its connection goes back to the pool, so the stream below is relayed inline.
        async with http.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES}) as r:
            assert r.status == 200
        body = {"model": "fake", "messages": MESSAGES, "stream": True}
        async with http.post(f"{url}/v1/chat/completions", json=body) as r:
            assert r.status == 200
            assert (await r.content.readline()).startswith(b"data: ")  # started; now hang up
        await asyncio.wait_for(replica.cancelled.wait(), 30)  # the proxy hung up on the replica too
        for _ in range(100):  # bounded wait for the finish report, not a timing assertion
            state = await _state(http, url)
            if state["in_flight"] == 0:
                break
            await asyncio.sleep(0.05)
        assert state["in_flight"] == 0
        assert await _metric(http, url, "saga_client_disconnects_total") == 1.0
        # The connection and the proxy are fine afterwards: the next calls are answered.
        for _ in range(3):
            async with http.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES}) as r:
                assert r.status == 200 and (await r.json())["choices"][0]["message"]["content"] == "hi"
        assert (await _state(http, url))["in_flight"] == 0


async def _long_stream(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
    """Answers /health; answers every call with EVENTS SSE events in one go (chunked), then [DONE]."""
    if head.startswith(b"GET"):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
    writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%b\r\n" % (len(EVENT), EVENT)
    for _ in range(EVENTS):
        writer.write(chunk)
        await writer.drain()
    done = b"data: [DONE]\n\n"
    writer.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(done), done))


async def test_a_slow_reader_gets_a_long_stream_whole() -> None:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http,
        raw_replica(_long_stream) as replica,
        running_proxy(config([replica])) as url,
    ):
        body = {
            "model": "fake",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for _ in range(2):  # the second call goes on the pooled connection the first one left
            async with http.post(f"{url}/v1/chat/completions", json=body) as r:
                assert r.status == 200
                await asyncio.sleep(0.5)  # not reading: the proxy's and the sockets' buffers fill up
                received = await r.read()
            assert received == EVENT * EVENTS + b"data: [DONE]\n\n"
        assert (await _state(http, url))["in_flight"] == 0


async def test_timeouts_on_a_pooled_connection_answer_as_on_a_fresh_one() -> None:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
        fake_replica() as replica,
        running_proxy(config([replica.url], first_byte_timeout_s=0.5, stream_idle_timeout_s=0.5)) as url,
    ):
        async with http.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES}) as r:
            assert r.status == 200  # its connection is pooled: the next call goes on it
        replica.mode = "stall-stream"  # headers and one event, then silence
        body = {"model": "fake", "messages": MESSAGES, "stream": True}
        async with http.post(f"{url}/v1/chat/completions", json=body) as r:
            assert r.status == 200
            stream = await r.read()  # ends: the idle timeout closes the stream with an error event
        assert stream.startswith(b"data: ") and b'"code":"upstream_timeout"' in stream  # stalled, not failed
        async with http.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES}) as r:
            assert r.status == 200  # a whole answer is not a stream: "stall-stream" answers it
        replica.mode = "hang"  # never answers: the first-byte timeout
        async with http.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES}) as r:
            assert r.status == 504
            assert (await r.json())["error"]["code"] == "upstream_timeout"
        await asyncio.wait_for(replica.cancelled.wait(), 30)  # the proxy hung up on the replica
        assert (await _state(http, url))["in_flight"] == 0
