"""A bench backend that streams like vLLM: one SSE event per token, each in its own write, `interval_ms`
apart (`saga bench overhead --backend paced`).

nginx answers the overhead bench's stream in one TCP segment, so a router's per-chunk cost (a wake-up, a
scan and a write per event) never shows; vLLM sends each token's event as it is made. This backend writes
`events` content events, then the finish, usage and `[DONE]` events, each in its own write with TCP_NODELAY
(its own segment on loopback), `interval_ms` apart; a non-streaming call gets the same fixed JSON as nginx.
It also answers `/health`, `/metrics` and `/get_load` as the nginx backend does.

Contract: `python -m loadtests.bench.paced_backend --port P [--events N] [--interval-ms D]` serves until
SIGINT/SIGTERM. uvloop + httptools, one process: at the bench's 32 connections and a few ms between events
it is far from its own limit (it sleeps most of the time), so the router's CPU per call is what changes.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket

import httptools
import uvloop

from loadtests.bench.overhead import _CHUNK, CHAT_JSON
from proxy.arg_types import at_least, non_negative

_END_EVENTS = (
    'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
    '"delta":{},"finish_reason":"stop"}]}\n\n',
    'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
    '"usage":{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}}\n\n',
    "data: [DONE]\n\n",
)


def stream_events(events: int) -> list[bytes]:
    """The SSE events of one streamed answer, each one HTTP chunk (framing included), then the last chunk."""
    words = [f" tok{i}" for i in range(events)]
    texts = ["data: " + _CHUNK % w + "\n\n" for w in words]
    texts += [_END_EVENTS[0], _END_EVENTS[1] % (events, 12 + events), _END_EVENTS[2]]
    return [b"%x\r\n%b\r\n" % (len(t.encode()), t.encode()) for t in texts] + [b"0\r\n\r\n"]


class _Backend(asyncio.Protocol):
    def __init__(self, events: list[bytes], interval_s: float) -> None:
        self.events, self.interval_s = events, interval_s
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.busy = False  # a stream is being written: a pipelined request waits (wrk does not pipeline)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        path = self.url.split(b"?", 1)[0]
        if path in (b"/health", b"/metrics"):
            self._whole(b"", "text/plain")
        elif path == b"/get_load":
            self._whole(b'{"load": 0}', "application/json")
        elif b'"stream":true' in b"".join(self.body).replace(b" ", b""):
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            asyncio.get_running_loop().call_later(self.interval_s, self._next, 0)
        else:
            self._whole(CHAT_JSON.encode(), "application/json")

    def _whole(self, body: bytes, content_type: str) -> None:
        assert self.transport is not None
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        self.transport.write(head.encode() + body)

    def _next(self, index: int) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(self.events[index])
        if index + 1 < len(self.events) - 1:
            asyncio.get_running_loop().call_later(self.interval_s, self._next, index + 1)
        else:  # the last event and the stream's end go together, as an HTTP server ends a stream
            self.transport.write(self.events[-1])


async def start(port: int, events: int, interval_ms: float) -> asyncio.Server:
    chunks = stream_events(events)
    return await asyncio.get_running_loop().create_server(
        lambda: _Backend(chunks, interval_ms / 1000), "127.0.0.1", port, backlog=4096
    )


async def serve(port: int, events: int, interval_ms: float) -> None:
    loop = asyncio.get_running_loop()
    server = await start(port, events, interval_ms)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--events", type=at_least(1), default=16, help="content events per stream (default: %(default)s)"
    )
    p.add_argument(
        "--interval-ms", type=non_negative, default=2.0, help="between events (default: %(default)s)"
    )
    args = p.parse_args()
    uvloop.run(serve(args.port, args.events, args.interval_ms))


if __name__ == "__main__":
    main()
