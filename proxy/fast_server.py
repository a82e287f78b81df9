"""The client-facing server for `server: fast`: an asyncio.Protocol with httptools parsing (on uvloop).

aiohttp's server spends most of a proxied call's CPU in per-request Python objects (request, response,
middlewares, writer); this one parses with httptools and writes each answer as one buffer.

Contract:
- `POST` to a call route (proxy/calls.py's `CALL_ROUTES`) is served here through `calls.serve_call`: the same
  identity, tenants, scheduler decisions, retries, timeouts, stream scanning and accounting as under aiohttp.
  Client API keys are checked here (proxy/auth.py's `call_tenant`); the proxy's refusals (`ProxyError`) are
  answered in the OpenAI error shape and counted in `saga_errors`, as aiohttp's middleware does.
- Every other request (admin, models, passthrough, /metrics, /health, unknown paths, other methods) is handed,
  as it came, to the aiohttp app on a private Unix socket and its answer relayed back: one app holds all
  routes, this server only takes the hot ones off it.
- The HTTP layer's own refusals are OpenAI-shaped and close the connection: malformed HTTP or a header line
  over 8190 bytes (aiohttp's limit) is a 400 quoting nothing back, a body over `max_body_bytes` a 413.
- Requests on a keep-alive connection are served one at a time, in order (pipelining included; the
  `100 Continue` a request expects goes out after every earlier answer); a connection without a complete
  request for `KEEP_ALIVE_S` since the last answer or the start of the request being read is closed.
  Reading pauses while more than `_MAX_QUEUED` requests wait or while answers pile up unread behind
  pipelined ones, and a client that reads nothing of its answers for `stream_idle_timeout_s` is taken as
  gone, so neither holds memory or a call without bound. A head is bounded by `MAX_HEAD_BYTES` even
  while one field of it never ends; a chunked request's trailer fields are not read; an upgrade offer
  (h2c, websocket) is declined and the request served in HTTP/1.1 (RFC 9110 7.8). A client that hangs up
  cancels what its connection was serving (a call is then aborted upstream and reported cancelled); so does
  a half-close (`shutdown(SHUT_WR)`), which TCP tells from a hang-up only once a write fails
  (docs/config.md, `server`).
- A call is begun from the parser's callback (`calls.begin_call`): on the common path (dispatched at once, a
  pooled upstream connection idle) it is relayed from the connections' callbacks with no task
  (proxy/inline_relay.py); anything else goes on in a task, as every other request does.
- One access-log line per request on `saga.access` when `access_log` is on, in aiohttp's format.
- With several workers (`saga serve --workers N`, proxy/worker_set.py), a call whose session another worker
  owns (proxy/identity.py's `ownership_key`) is not served here: once every earlier answer on the connection
  is out, the connection moves to the owner with the bytes read since that request began
  (proxy/connection_handoff.py; the owner serves its first request whatever it computes, so no ping-pong). A
  connection moves at most once: later calls of other workers' sessions on it are relayed to the owner's
  calls socket (`begin_relay`: from callbacks on an idle pooled connection, as calls to replicas are; else
  `relay_call`, in a task). Refusals (malformed HTTP, bad JSON, bad identity values) are answered where
  read; an owner that cannot be reached means the call is served here (`HandoffCounts.failed`). What a
  connection keeps for a possible move is bounded by `max_body_bytes` + `MAX_HEAD_BYTES` and released
  whenever the connection is between requests. A connection whose bytes cannot be handed on as read (an
  upgrade offer declined, a refusal queued behind earlier requests) does not move: its calls of other
  workers' sessions are relayed. A call relayed to its owner gets one access-log line, the reader's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import httptools
from aiohttp import web
from multidict import CIMultiDict

from proxy import forward
from proxy.auth import call_tenant
from proxy.calls import CALL_ROUTES, begin_call, parse_call, serve_call
from proxy.connection_handoff import HANDOFF_COUNTS, HandoffCounts, HandoffLinks, HandoffListener
from proxy.context import CHAIN_OWNERS, CONFIG, CORE, METRICS, QUOTE_OWNERS, RESPONSE_OWNERS, WORKERS
from proxy.cors import CorsPolicy, exempt
from proxy.data_structs import CallFields, SeenMessages
from proxy.errors import (
    COMPRESSED_BODY,
    UNKNOWN_EXPECTATION,
    UNKNOWN_TRANSFER_CODING,
    ProxyError,
    coded_transfer,
    compressed_body,
    retry_after,
    stopping_event,
    too_large_message,
)
from proxy.http_limits import MAX_FIELD_BYTES, MAX_HEAD_BYTES, MAX_HEADERS
from proxy.identity import ownership_key, quoting_texts, system_of
from proxy.inline_relay import InlineRelay
from proxy.logs import BatchedLines, TimeNameMessage, answer_ids, info_record
from proxy.quoted_answers import quote_tag, quoted_lines
from proxy.response_owners import ChainOwners, QuoteOwners
from proxy.session_chain import answer_keys
from proxy.sse_scan import SentNumbers, numbers_for
from proxy.upstream_pool import ConnectFailed, UpstreamAnswer, UpstreamPool
from proxy.worker_set import LOCAL_HEADER, WorkerSet

log = logging.getLogger("saga.proxy")
access_log = logging.getLogger("saga.access")

KEEP_ALIVE_S = 75.0  # an idle keep-alive connection, or one sending a request this slowly, is closed
_FAST_PATHS = frozenset(CALL_ROUTES)
_KNOWN_OWNERS = 4096  # session keys whose owner is kept (forgotten all at once past it)
# A conversation's answers looked up in the workers' chain table, latest first: the latest is the one its
# worker recorded last; earlier ones only matter when a client rewrote its history.
_CHAIN_LOOKUPS = 4
# An access line shows this much of a request target at most (the head may be 64 KiB).
MAX_LOGGED_TARGET = 2048
_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n" for s in HTTPStatus}
_JSON = {"Content-Type": "application/json"}
_METHODS = {b"POST": "POST", b"GET": "GET"}  # decoded once
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_MAX_QUEUED = 64  # requests read ahead of their answers on one connection before reading pauses


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "refused", "url", "version")

    def __init__(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        keep_alive: bool,
        version: str,
        refused: ProxyError | None = None,
    ) -> None:
        self.method, self.url, self.headers, self.body = method, url, headers, body
        self.keep_alive, self.version, self.refused = keep_alive, version, refused


class _Date:
    """The Date header's value, formatted once a second."""

    def __init__(self) -> None:
        self._second, self._value = -1, ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second, self._value = second, formatdate(second, usegmt=True)
        return self._value


_date = _Date()


# A replica's answer with one of these statuses has no body (a stray one is dropped as the replica's parser
# reads it), and the client must be told no length: RFC 9110 forbids Content-Length on a 204.
_NO_BODY_STATUSES = frozenset((204, 304))


def _head(status: int, headers: Mapping[str, str], framing: str) -> bytes:
    lines = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"]
    for name, value in headers.items():  # a loop: mypyc makes a generator expression an object
        lines.append(f"{name}: {value}\r\n")
    if "Date" not in headers and "date" not in headers:
        lines.append(f"Date: {_date.now()}\r\n")
    lines.append(framing)
    return "".join(lines).encode("latin-1")


class _Downstream:
    """`forward.Downstream` over a fast-server connection."""

    def __init__(self, conn: _ClientConnection, request: _Request) -> None:
        self.conn, self.request = conn, request
        self.started = time.perf_counter()
        self.status = 0
        self.sent = 0
        self.head_fields: Mapping[str, str] | None = None  # a started stream's header fields
        self.answer_fields: Mapping[str, str] | None = None  # a whole answer's (for its access line)
        self.numbers: SentNumbers | None = None  # a Responses API stream's (its error event's number)
        self.chunked = request.version == "1.1"  # an HTTP/1.0 client reads a stream to the close
        self._connection = "" if request.keep_alive else "Connection: close\r\n"
        if request.keep_alive and request.version == "1.0":
            self._connection = "Connection: keep-alive\r\n"
        # The allowed origin's CORS fields, in every answer's head (none unless `cors_allowed_origins` is set:
        # nothing to look up per call then)
        cors = conn.server.cors
        self._cors = ""
        if cors is not None and not exempt(request.url):  # (never the admin API's nor /metrics)
            self._cors = cors.fields(_field(request.headers, "origin"))

    def _connection_field(self) -> str:
        """What the head says of the connection: while the proxy stops (`FastServer.drain`), that it closes
        after this answer unless the client sent more requests already (those are answered first); with the
        allowed origin's CORS fields before it."""
        conn = self.conn
        if conn.server.draining and not conn.queue:
            self.request.keep_alive = False
            return self._cors + "Connection: close\r\n"
        return self._cors + self._connection

    def answer(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.answer_fields = headers
        connection = self._connection_field()
        if status in _NO_BODY_STATUSES:  # RFC 9110: no body, and no Content-Length on a 204
            framing, body = f"{connection}\r\n", b""
        else:
            framing = f"Content-Length: {len(body)}\r\n{connection}\r\n"
        payload = _head(status, headers, framing) + body
        self.sent += len(payload)
        conn = self.conn
        # With other calls in flight the answer goes with the turn's other writes: a client that holds
        # several connections (an agent runner, a load generator) wakes once for them, not once an answer.
        conn.send(payload, len(conn.server.calls_in_flight) <= 1)

    def answer_head(self, status: int, headers: Mapping[str, str], length: str | None) -> None:
        """A HEAD request's answer: the GET's headers and length (none said when not known), no body."""
        self.status = status
        said = "" if length is None else f"Content-Length: {length}\r\n"
        payload = _head(status, headers, f"{said}{self._connection_field()}\r\n")
        self.sent += len(payload)
        self.conn.send(payload, at_once=True)

    async def start(self, status: int, headers: Mapping[str, str]) -> None:
        if self.start_now(status, headers):
            await self.conn.drain()

    async def write(self, chunk: bytes) -> None:
        if self.write_now(chunk):  # else no need to wait (and no coroutine to make)
            await self.conn.drain()

    async def end(self) -> None:
        if self.end_now():
            await self.conn.drain()

    # -- without waiting (proxy/inline_relay.py's `InlineDownstream`); True: the client is behind ------

    def start_now(self, status: int, headers: Mapping[str, str]) -> bool:
        self.status = status
        self.head_fields = headers
        self.numbers = numbers_for(self.request.url)
        if not self.chunked:
            self.request.keep_alive = False
            framing = f"{self._cors}Connection: close\r\n\r\n"
        else:
            framing = f"Transfer-Encoding: chunked\r\n{self._connection_field()}\r\n"
        return self._send(_head(status, headers, framing))

    def write_now(self, chunk: bytes, at_once: bool = False) -> bool:
        """`at_once`: write now unless something waits to go before it, instead of with whatever else this
        turn of the loop sends (a paced stream's chunk: nothing else comes in this turn)."""
        if not chunk:
            return False
        numbers = self.numbers
        if numbers is not None:
            numbers.sent(chunk)
        return self._send(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self.chunked else chunk, at_once)

    def next_sequence_number(self) -> int | None:
        return self.numbers.next() if self.numbers is not None else None

    def end_now(self) -> bool:
        return self._send(b"0\r\n\r\n") if self.chunked else False

    def _send(self, data: bytes, at_once: bool = False) -> bool:
        self.sent += len(data)
        conn = self.conn
        conn.send(data, at_once)
        return conn.transport is None or conn._paused

    def hold(self, relay: InlineRelay) -> None:
        self.conn.inline = relay

    def hand_over(self, work: Coroutine[Any, Any, None], ended: Callable[[], None]) -> None:
        self.conn.hand_over(self, work, ended)

    def done(self) -> None:
        self.conn.inline_done(self)


def _cut_answer(downstream: _Downstream, stopping: ProxyError) -> bool:
    """`FastServer.cut` for one answer in progress; False where it could only be cut (a whole answer half
    sent, or a stream that is not server-sent events): what the client sent after it goes unanswered."""
    if downstream.status == 0:  # (counted once, by the call's end: `Call._hung_up`)
        forward.answer_error(downstream, stopping, downstream.request.url)
        return True
    if not _is_event_stream(downstream.head_fields):
        return False
    path = downstream.request.url.partition("?")[0]
    number = downstream.next_sequence_number()
    downstream.write_now(stopping_event(path, stopping.message, number))  # (HTTP/1.0: read to the close)
    downstream.end_now()  # (chunked only)
    return downstream.chunked


def _is_event_stream(fields: Mapping[str, str] | None) -> bool:
    if not fields:
        return False
    for name, value in fields.items():
        if name.lower() == "content-type":
            return value.lower().startswith("text/event-stream")
    return False


def _field(headers: list[tuple[str, str]], lowered_name: str) -> str | None:
    """The first value of a request's header field named `lowered_name` (None: none)."""
    for name, value in headers:
        if name.lower() == lowered_name:
            return value
    return None


# What a closed connection's `parser` is: nothing is parsed after the connection is lost.
_SPENT_PARSER = httptools.HttpRequestParser(object())


class _ClientConnection(asyncio.Protocol):
    def __init__(self, server: FastServer, prefix: bytes = b"", relayed: bool = False) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = "-"
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[_Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.inline: InlineRelay | None = None  # the call being relayed from callbacks, when one is
        self.current: _Downstream | None = None  # the answer of the request served last (`FastServer.cut`)
        self._writable: asyncio.Future[None] | None = None
        self._paused = False
        # What a call writes within one turn of the event loop goes out in one write (head, chunks, end).
        self._pending: list[bytes] = []
        # With several workers: every byte read since the start of the first request not yet served here
        # (from a message boundary: `_raw_served` complete messages at its head were served here already),
        # so the connection can be handed to the worker that owns that request's session. None otherwise.
        # None too on a connection from another worker relaying calls this one owns (`relay_call`), and once
        # what was read can no longer be handed on as it came (an upgrade declined, a refusal).
        self._raw: list[bytes] | None = [] if server.links is not None and not relayed else None
        # With several workers, calls go to their session's owner (`_serve_next`); not the calls another
        # worker relays here, which are this worker's.
        self._routes = server.links is not None and not relayed
        # One access-log line per request: a relayed call's is the reading worker's (with the client's
        # address), not the owner's too.
        self._logs_access = server.access_log and not relayed
        self._raw_size = 0
        self._raw_served = 0
        self._raw_lost = False  # over the bound: no hand-off until the connection is between requests
        self._between = True  # the parser is between messages
        self._prefix = prefix  # what another worker read from this connection before handing it here
        self._serve_here = bool(prefix)  # its first request is served here whatever the owner (no ping-pong)
        # A connection moves once: later calls of other workers' sessions on it (a client pooling connections
        # across sessions) are relayed to their owner instead of moving it back and forth.
        self._moved = bool(prefix)
        self._in_head = False  # a request's head is being read (its fields come whole from the parser)
        self._head_fed = 0  # bytes fed while in one request's head, past the parser's own field checks
        self._began = False  # a request began during the current feed (its head's start is inside it)
        self._held_back = False  # reading paused: answers pile up that the client is not reading
        self._stalled: asyncio.TimerHandle | None = None  # the client has read nothing for a while
        self._reset_message()

    def _reset_message(self) -> None:
        self._url: list[bytes] = []
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._head_size = 0
        self._field_size = 0
        self._refused = False  # this message was already answered with a refusal; skip the rest
        self._continue_pending = False  # it asked for `100 Continue` while an earlier answer was going out

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else "-"
        self.server.connections.add(self)
        self._arm_idle_timer()
        if self._prefix:  # a connection handed over by another worker: what it read comes first
            prefix, self._prefix = self._prefix, b""
            self.data_received(prefix)

    def _arm_idle_timer(self) -> None:
        """A connection with no request in progress is closed after `KEEP_ALIVE_S` (aiohttp's default).

        One timer per connection, not one per request: serving a request only stamps `_idle_since`, and the
        timer, when it fires, closes the connection or re-arms itself for the rest of the idle time."""
        loop = self.loop = asyncio.get_running_loop()
        self._idle_since = loop.time()
        self._idle_timer = loop.call_later(KEEP_ALIVE_S, self._idle_too_long)

    def _idle_too_long(self) -> None:
        if self.transport is None:
            return
        loop = self.loop
        busy = bool(self.queue) or self._busy()
        left = KEEP_ALIVE_S - (loop.time() - self._idle_since)
        if busy or left > 0:  # serving, or idle for less than the limit since the last request ended
            self._idle_timer = loop.call_later(KEEP_ALIVE_S if busy else left, self._idle_too_long)
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        raw = self._raw
        if raw is not None and not self._raw_lost:
            raw.append(data)
            self._raw_size += len(data)
            if self._raw_size > self.server.handoff_bytes:
                raw.clear()
                self._raw_size, self._raw_lost = 0, True
        self._began = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._decline_upgrade(data[int(e.args[0]) :])
        except httptools.HttpParserError as bad:  # one name per exception type: mypyc types it once
            self._refuse(400, f"malformed HTTP request ({type(bad).__name__})")
        if self._in_head and not self._began and not self._refused:
            # A head open now that did not begin in `data` was open before it: all of `data` was more of that
            # one head (not the end of one, whole requests and another's start, as a pipelining client's read
            # can be). httptools hands a field over only once it is whole, joining its pieces meanwhile (in
            # time quadratic in its length): a field that never ends is refused here.
            self._head_fed += len(data)
            if self._head_fed > MAX_HEAD_BYTES:
                self._refuse(400, "malformed HTTP request (header too long)")
        if self.queue and not self._busy():
            self._serve_next()
        if len(self.queue) > _MAX_QUEUED and not self._refused:
            self._hold_back()  # a client pipelining requests faster than it reads their answers
        raw = self._raw
        if raw is not None and self._between and not self.queue:  # all read so far is served here
            raw.clear()
            self._raw_size = self._raw_served = 0
            self._raw_lost = False

    def _decline_upgrade(self, rest: bytes) -> None:
        """An upgrade offer (h2c, websocket: `curl --http2` sends one) is declined, as RFC 9110 7.8 lets a
        server: the request is read again without it, by a parser of its own, with its body (httptools
        stops at the end of an upgrading request's head and reads nothing after it)."""
        # What the parser reads is no longer what was read: this connection is not handed on (its calls of
        # other workers' sessions are relayed).
        self._raw = None
        request = self.queue[-1] if self.queue else None
        if request is None or request.refused is not None or request.method == "CONNECT":
            if request is not None:
                request.keep_alive = False  # answered in HTTP/1.1, then the connection closed
            return
        self.queue.pop()
        lines = [f"{request.method} {request.url} HTTP/{request.version}\r\n"]
        for name, value in request.headers:
            lowered = name.lower()
            if lowered == "upgrade" or lowered == "http2-settings":
                continue
            if lowered == "connection":
                kept = [t for t in value.split(",") if t.strip().lower() not in ("upgrade", "http2-settings")]
                if not kept:
                    continue
                value = ",".join(kept)
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        self.parser = httptools.HttpRequestParser(self)
        try:
            self.parser.feed_data("".join(lines).encode("latin-1") + rest)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as bad:
            self._refuse(400, f"malformed HTTP request ({type(bad).__name__})")

    def _hold_back(self) -> None:
        if not self._held_back and self.transport is not None:
            self._held_back = True
            self.transport.pause_reading()

    def _catch_up(self) -> None:
        """Reading goes on once the client reads its answers again and few requests wait."""
        if self._held_back and not self._paused and len(self.queue) <= _MAX_QUEUED and not self._refused:
            self._held_back = False
            if self.transport is not None:
                self.transport.resume_reading()

    def _client_stalled(self) -> None:
        """The client read nothing of its answers for `stream_idle_timeout_s`: it is taken as gone (what it
        was served is aborted and released), as nginx's `send_timeout` does."""
        self._stalled = None
        if self.transport is not None and self._paused:
            log.info(
                "client %s read nothing for %g s: connection closed", self.peer, self.server.idle_timeout_s
            )
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.current = None  # (it refers back to this connection: no cycle left for the rare full collection)
        self._idle_timer.cancel()
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
        self.server.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the client is gone: abort what it was waiting for
        inline, self.inline = self.inline, None
        if inline is not None:
            inline.client_gone()
            downstream = inline.downstream
            if self._logs_access and isinstance(downstream, _Downstream):
                # as a task's hang-up is logged (`_serve_in_task`): what was sent, or 499 if nothing was
                self._log_access(
                    downstream.request, downstream, time.perf_counter() - downstream.started, 499
                )
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ConnectionResetError("the client closed the connection"))
        # The parser calls back into this connection, a reference cycle that only a full garbage collection
        # would free, and those are rare here (proxy/server.py): with a parser of its own no longer, a closed
        # connection (a request body it read too) is freed as soon as nothing else holds it.
        self.parser = _SPENT_PARSER

    def pause_writing(self) -> None:
        self._paused = True
        if self.queue:
            self._hold_back()
        if self._stalled is None:
            self._stalled = self.loop.call_later(self.server.idle_timeout_s, self._client_stalled)

    def resume_writing(self) -> None:
        self._paused = False
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
        self._catch_up()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if self.inline is not None:
            self.inline.writable()

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._between = False
        self._in_head, self._head_fed, self._began = True, 0, True
        self._idle_since = self.loop.time()  # a request arriving slowly has the whole keep-alive time
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > MAX_HEAD_BYTES:
            self._refuse(400, "malformed HTTP request (request line too long)")
        else:
            self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused or not self._in_head:  # after the head: a chunked body's trailer fields, not read
            return
        size = len(name) + len(value)
        self._head_size += size
        if name:
            if len(self._headers) >= MAX_HEADERS:
                self._refuse(431, f"more than {MAX_HEADERS} header fields", "too_many_headers")
                return
            self._field_size = size
            self._headers.append((name.decode("latin-1"), value.decode("latin-1")))
        else:  # a header value continued in another data chunk
            self._field_size += size
            last_name, last_value = self._headers[-1]
            self._headers[-1] = (last_name, last_value + value.decode("latin-1"))
        if self._field_size > MAX_FIELD_BYTES or self._head_size > MAX_HEAD_BYTES:
            self._refuse(400, "malformed HTTP request (header too long)")

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._refused:
            return
        limit = self.server.max_body_bytes
        expects = host = unknown_expectation = False
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == "host":
                host = True
            if lowered == "content-length" and value.strip().isdigit() and int(value) > limit:
                self._refuse_too_large()
                return
            if lowered == "content-encoding" and compressed_body(value):
                self._refuse(415, COMPRESSED_BODY, "unsupported_content_encoding", whole_head=True)
                return
            if lowered == "transfer-encoding" and coded_transfer(value):  # RFC 9112 6.1: a 501
                self._refuse(501, UNKNOWN_TRANSFER_CODING, "unsupported_transfer_encoding", whole_head=True)
                return
            if lowered == "expect":
                if value.strip().lower() == "100-continue":
                    expects = True
                else:
                    unknown_expectation = True
        if self.parser.get_http_version() != "1.1":  # RFC 9110 10.1.1: HTTP/1.0 expectations are ignored
            expects = False
        elif not host:  # RFC 9112 3.2: a 400
            self._refuse(400, "an HTTP/1.1 request must carry a Host header", whole_head=True)
            return
        elif unknown_expectation:  # RFC 9110 10.1.1: a 417, as aiohttp's server answers it
            self._refuse(417, UNKNOWN_EXPECTATION, "unsupported_expectation", whole_head=True)
            return
        if expects:  # after the refusals: a body that would be refused is not asked for
            if self.queue or self._busy():
                # an earlier answer is still going out: the interim answer would land inside it, so it goes
                # once that is out (`_serve_next`), unless the body comes first anyway
                self._continue_pending = True
            else:
                self.send(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._size += len(body)
        if self._size > self.server.max_body_bytes:
            self._refuse_too_large()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._between = True
        self._continue_pending = False  # the body came: no interim answer is owed
        if self._refused:
            return
        parser = self.parser
        url = b"".join(self._url).decode("latin-1")
        if url[:1] != "/" and "://" in url:  # absolute-form (RFC 9112 3.2.2): served as its origin-form
            url = _origin_form(url)
        request = _Request(
            _method_name(parser.get_method()),
            url,
            self._headers,
            b"".join(self._body),
            parser.should_keep_alive(),  # only valid here
            parser.get_http_version(),
        )
        # The request owns what was read: a connection kept alive between calls holds none of it (an agent's
        # body of hundreds of kB, in chunks beside its joined copy, stayed until the next request began).
        self._reset_message()
        self.queue.append(request)  # served once the parser returns (`data_received`)

    # -- serving ------------------------------------------------------------------------------------

    def _refuse_too_large(self) -> None:
        limit = self.server.max_body_bytes
        self._refuse(413, too_large_message(limit), whole_head=True)

    def _refuse(self, status: int, message: str, code: str = "", whole_head: bool = False) -> None:
        """Queues a refusal that closes the connection; reads no more from it. `whole_head`: the request line
        was read whole and parsed, so the refusal names its method and URL (in the access log) and takes
        its route's error shape (Anthropic's on /v1/messages); else it is OpenAI's, for "-"."""
        if self._refused:
            return
        self._refused = True
        self._raw = None  # the connection closes after the refusal
        if self.transport is not None:
            self.transport.pause_reading()
        if not code:
            code = "request_too_large" if status == 413 else "malformed_http"
        refusal = ProxyError(status, message, code=code)
        method, url = "-", "-"
        if whole_head:
            method, url = _method_name(self.parser.get_method()), b"".join(self._url).decode("latin-1")
        # (the fields read so far: its `Origin` names the origin its refusal is for, with CORS on)
        self.queue.append(_Request(method, url, list(self._headers), b"", False, "1.1", refused=refusal))

    def send(self, data: bytes, at_once: bool = False) -> None:
        """Queues `data` to go out with whatever else is sent in this turn of the loop; `at_once` writes it
        now when nothing is queued before it."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        if at_once and not self._pending:
            self.transport.write(data)
            return
        if not self._pending:  # (the connection's loop: get_running_loop() makes a getpid() call each time)
            self.loop.call_soon(self.flush)
        self._pending.append(data)

    def in_progress(self) -> bool:
        """A call is being served, requests wait their turn, or one is being read (the parser is not between
        messages): what a graceful stop waits for (`FastServer.busy`) and does not close (`drain`)."""
        return self._busy() or bool(self.queue) or not self._between

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        if self.transport is None:
            raise ConnectionResetError("the client closed the connection")
        if self._paused:
            self._writable = self.loop.create_future()
            await self._writable

    def _busy(self) -> bool:
        return self.inline is not None or (self.task is not None and not self.task.done())

    def _serve_next(self) -> None:
        """Serves the queued requests in order while each ends at once or is relayed from callbacks; the
        first that needs waiting goes on in a task (which calls this again when its request is served)."""
        while self.queue and self.transport is not None and not self._busy():
            request = self.queue.popleft()
            self._raw_served += 1
            downstream = self.current = _Downstream(self, request)
            path = request.url.partition("?")[0]
            if request.refused is not None or request.method != "POST" or path not in _FAST_PATHS:
                self.hand_over(downstream, self._serve(request, downstream), None)
                return
            try:
                headers = CIMultiDict(request.headers)
                keys = self.server.api_keys
                tenant = (
                    call_tenant(keys, headers.get("Authorization"), headers.get("x-api-key"))
                    if keys
                    else None
                )
                if not self._routes:
                    begin_call(
                        self.server.app, path, headers, request.body, tenant, downstream, request.headers
                    )
                else:  # one worker of several: the call is served by its session's owner
                    fields = parse_call(request.body)  # a refusal is answered here, where it was read
                    key, seen = ownership_key(headers, fields, tenant)
                    owner = self._owner_elsewhere(key, fields, seen, tenant)
                    if owner >= 0 and not (self._moved or self._raw_lost or self._raw is None):
                        self.queue.appendleft(request)
                        self._raw_served -= 1
                        self._pass_to(owner)
                        return
                    if owner >= 0:
                        self.server.begin_relay(owner, request, downstream, path, tenant)
                        return
                    app = self.server.app
                    begin_call(
                        app, path, headers, request.body, tenant, downstream, request.headers, fields, seen
                    )
            except ProxyError as e:
                self._answer_error(downstream, e)
            except Exception:
                self._failed(request, downstream)
            if self._busy():  # relayed from callbacks (`inline_done` goes on), or handed over to a task
                return
            if not self._served(request, downstream):
                return
        if self._held_back:
            self._catch_up()
        if not self.queue:
            self._idle_since = self.loop.time()
            if self._continue_pending and self.transport is not None and not self._busy():
                self._continue_pending = False
                self.send(_CONTINUE)

    # -- handing the connection to another worker (proxy/connection_handoff.py) ---------------------------

    def _owner_elsewhere(
        self, key: str | None, fields: CallFields, seen: SeenMessages | None, scope: str | None
    ) -> int:
        """The worker that owns `key` when it is not this one, else -1 (also for the first request of a
        connection handed to this worker: served here whatever this worker computes, so no ping-pong). A
        call that continues a Responses API answer goes to the worker that served it, whatever session it
        names: that worker alone knows which tenant the answer is for. A chat
        call naming no session (`seen`) goes to the worker that served the latest of its answers the workers'
        chain table holds (proxy/response_owners.py); its
        conversation's first call is served here (so calls that share an opening are spread over the
        workers), with an id of its own unless this worker owns the opening; a continuation no worker
        recorded goes to its opening's owner. A first call quoting an answer another worker filed for a
        compacting agent (proxy/response_owners.py `QuoteOwners`) goes to that worker, which holds the
        session it may take up."""
        serve_here, self._serve_here = self._serve_here, False
        workers = self.server.workers
        if workers is None:
            return -1
        if seen is not None and key is not None:
            chain_owners = self.server.chain_owners
            if chain_owners is not None:
                answers = answer_keys(seen.chain, seen.assistants, seen.messages, seen.seed, _CHAIN_LOOKUPS)
                for answer in answers:
                    owner = chain_owners.owner(answer)
                    if owner >= 0:
                        return -1 if serve_here or owner == workers.index or owner >= workers.count else owner
                if not seen.assistants:
                    if not serve_here and self.server.quote_owners is not None:
                        owner = self._quoted_elsewhere(
                            self.server.quote_owners, chain_owners, seen, fields, scope
                        )
                        if 0 <= owner < workers.count and owner != workers.index:
                            return owner
                    seen.opening_elsewhere = self._owner_of(key, workers) != workers.index
                    return -1
        if serve_here:
            return -1
        owners_of_responses = self.server.response_owners
        previous_response = fields.previous_response_id
        if previous_response is not None and owners_of_responses is not None:
            # Only the worker that served it knows whose it is (`foreign_response`): a session the call names
            # does not send it elsewhere, where another tenant's response would be continued unchecked.
            owner = owners_of_responses.owner(previous_response)
            if 0 <= owner < workers.count:
                return -1 if owner == workers.index else owner
        if key is None:
            return -1
        owner = self._owner_of(key, workers)
        return -1 if owner == workers.index else owner

    @staticmethod
    def _quoted_elsewhere(
        owners: QuoteOwners,
        chain_owners: ChainOwners,
        seen: SeenMessages,
        fields: CallFields,
        scope: str | None,
    ) -> int:
        """The worker that filed the answer this first call quotes, if any (a tag lookup when none), or the
        one the same first call was sent to for it before (a retry: the lines were claimed then); the tag
        and the lines looked up are kept in `seen` for the in-process look (proxy/identity.py `_taken_up`)."""
        if not owners.anything_filed():
            return -1
        tag = seen.quote_tag = quote_tag(scope, system_of(seen.messages, fields.system))
        if not owners.filed(tag):
            return -1
        seen.quoted = list(quoted_lines(quoting_texts(seen.messages), tag))
        owner = owners.claim(seen.quoted)
        conversation = seen.chain[-1]
        if owner >= 0:
            chain_owners.record_sent(conversation, owner)
            return owner
        return chain_owners.sent_to(conversation)

    def _owner_of(self, key: str, workers: WorkerSet) -> int:
        owners = self.server.owners
        owner = owners.get(key, -1)
        if owner < 0:
            if len(owners) >= _KNOWN_OWNERS:
                owners.clear()
            owner = owners[key] = workers.owner_of(key)
        return owner

    def _pass_to(self, owner: int) -> None:
        """Hands the connection to `owner` once every earlier answer is out (now, when it is already). A
        connection that moved already, whose bytes since the request began were over the bound, or whose
        bytes cannot be handed on as read (`_raw` None) is not moved: its calls of other workers' sessions
        are relayed (`relay_call`)."""
        transport = self.transport
        assert transport is not None
        transport.pause_reading()
        self.flush()
        if transport.get_write_buffer_size() == 0:
            if not self._pass_now(owner):
                self._serve_here_instead()
            return
        self.task = asyncio.get_running_loop().create_task(self._pass_when_written(owner))

    async def _pass_when_written(self, owner: int) -> None:
        delay = 0.001
        while self.transport is not None and self.transport.get_write_buffer_size() > 0:
            await asyncio.sleep(delay)  # rare: a client reading its earlier answers slowly
            delay = min(delay * 2, 0.05)
        self.task = None
        if self.transport is not None and not self._pass_now(owner):
            self._serve_here_instead()

    def _pass_now(self, owner: int) -> bool:
        raw, transport, server = self._raw, self.transport, self.server
        assert raw is not None and transport is not None and server.links is not None
        data = raw[0] if len(raw) == 1 else b"".join(raw)
        if self._raw_served:  # requests served here precede this one in what was read
            data = data[_message_start(data, self._raw_served) :]
        sock = transport.get_extra_info("socket")
        if sock is None or not server.links.pass_now(owner, sock.fileno(), data):
            server.counts.failed += 1
            return False
        server.counts.sent += 1
        # The owner's descriptor keeps the TCP connection open: closing this one sends neither FIN nor RST.
        self._raw = None
        self.queue.clear()
        self._idle_timer.cancel()
        server.connections.discard(self)
        transport.close()
        return True

    def _serve_here_instead(self) -> None:
        """The owner cannot be reached: the request is served here (counted in `HandoffCounts.failed`)."""
        self._serve_here = True
        if self.transport is not None:
            self.transport.resume_reading()
            self._serve_next()

    def hand_over(
        self, downstream: _Downstream, work: Coroutine[Any, Any, None], ended: Callable[[], None] | None
    ) -> None:
        self.inline = None
        self.task = self.loop.create_task(self._serve_in_task(downstream, work))
        if ended is not None:
            self.task.add_done_callback(lambda _: ended())

    def inline_done(self, downstream: _Downstream) -> None:
        self.inline = None
        if self._served(downstream.request, downstream):
            self._serve_next()

    async def _serve_in_task(self, downstream: _Downstream, work: Coroutine[Any, Any, None]) -> None:
        request = downstream.request
        try:
            try:
                await work
            except ProxyError as e:
                if downstream.status != 0:  # an answer already started: the relay ended it
                    raise
                self._answer_error(downstream, e)
        except ConnectionError:
            request.keep_alive = False
        except asyncio.CancelledError:
            if self.transport is None and self._logs_access:  # the client hung up (connection_lost)
                # logged as nginx logs it: 499 when no answer had started, else what was sent of it
                self._log_access(request, downstream, time.perf_counter() - downstream.started, 499)
            raise
        except Exception:
            self._failed(request, downstream)
        if self._served(request, downstream):
            self.task = None  # this task is ending: the next request may start another
            self._serve_next()

    def _failed(self, request: _Request, downstream: _Downstream) -> None:
        log.exception("error serving %s %s", request.method, request.url[:200])
        request.keep_alive = False
        if downstream.status == 0:
            with contextlib.suppress(ConnectionError):
                self._answer_error(downstream, ProxyError(500, "internal error in the proxy"))

    def _served(self, request: _Request, downstream: _Downstream) -> bool:
        """The request's answer is out: logged, and the connection closed unless kept alive (False)."""
        if self._logs_access:
            self._log_access(request, downstream, time.perf_counter() - downstream.started)
        if (
            request.keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
            and not (self.server.draining and not self.queue)
        ):
            return True
        request.keep_alive = False
        self.flush()
        if self.transport is not None:
            self.transport.close()
        return False

    async def _serve(self, request: _Request, downstream: _Downstream) -> None:
        """A request other than a call: a refusal, or the aiohttp app's (`hand_off`)."""
        if request.refused is not None:
            log.info("refused a request from %s: %s", self.peer, request.refused.message)
            self._answer_error(downstream, request.refused)
            return
        await self.server.hand_off(request, downstream)

    def _answer_error(self, downstream: _Downstream, err: ProxyError) -> None:
        self.server.metrics_errors(err.code or f"http_{err.status}")
        forward.answer_error(downstream, err, downstream.request.url)

    def _log_access(
        self, request: _Request, downstream: _Downstream, elapsed: float, unanswered: int = 0
    ) -> None:
        """The request's access line; `unanswered`: the status to log when no answer started."""
        if not access_log.isEnabledFor(logging.INFO):
            return
        # No format spec in the f-string: mypyc turns an f-string with one into a `str.format` call per
        # field (~1.3 µs here); `format` is one C call.
        seconds = format(elapsed, "f")
        status = downstream.status or unanswered
        url = request.url
        if len(url) > MAX_LOGGED_TARGET:  # a 60 KB query string made a 240 KB line, which shippers cut
            url = f"{url[:MAX_LOGGED_TARGET]}...(+{len(url) - MAX_LOGGED_TARGET} chars)"
        if '"' in url or "\\" in url:  # legal in a request target: escaped, so the line parses as it reads
            url = url.replace("\\", "\\\\").replace('"', '\\"')
        message = (
            f'{self.peer} "{request.method} {url} HTTP/{request.version}" '
            f"{status} {downstream.sent} {seconds}"
        )
        server = self.server
        if server.access_lines is not None and server.access_lines.add(message):
            return  # (the text line, which has no fields)
        # the call's session and replica, as its answer named them (JSON lines show them)
        fields = downstream.answer_fields or downstream.head_fields
        context = answer_ids(fields) if fields is not None else None
        sink = server.access_sink
        if sink is not None:
            sink.add_info(access_log.name, message, context)
        else:  # a record made directly: Logger.info would also walk the stack for the caller, ~5 µs a call
            access_log.handle(info_record(access_log.name, message, context))


class _MessageEnds:
    def __init__(self) -> None:
        self.count = 0

    def on_message_complete(self) -> None:
        self.count += 1


def _origin_form(url: str) -> str:
    """`http://host:port/path?query` -> `/path?query` (`/` when it names no path)."""
    start = url.find("/", url.find("://") + 3)
    return url[start:] if start >= 0 else "/" + url[len(url.split("?", 1)[0]) :]


def _method_name(raw: bytes) -> str:
    return _METHODS.get(raw) or raw.decode("latin-1")


def _message_start(data: bytes, messages: int) -> int:
    """Where message number `messages` (from 0) starts in `data`, which starts at a message's start: the
    shortest prefix in which a fresh parser completes that many (only when requests were pipelined). Two
    passes: the piece of `_PIECE` bytes in which that many complete, then that piece a byte at a time (a
    binary search parsed the whole prefix ~26 times: a 60 MB pipelined body stalled a worker for 9 s)."""
    view = memoryview(data)
    ends = _MessageEnds()
    parser = httptools.HttpRequestParser(ends)
    end = 0
    while ends.count < messages and end < len(data):
        parser.feed_data(view[end : end + _PIECE])
        end += _PIECE
    position = max(0, end - _PIECE)
    ends = _MessageEnds()
    parser = httptools.HttpRequestParser(ends)
    parser.feed_data(view[:position])
    while ends.count < messages and position < len(data):
        parser.feed_data(view[position : position + 1])
        position += 1
    return position


_PIECE = 4096


_MILLIS = [f"{ms:03d}" for ms in range(1000)]  # a line's milliseconds, as `TimeNameMessage` writes them


class _AccessLines:
    """The access log's lines in `saga serve`'s text format (`TimeNameMessage`), made here and appended to the
    batching handler's buffer: the line `TimeNameMessage.info_line` makes, without an interpreted call per
    request (~7% of a round-robin call's CPU in the in-process harness)."""

    def __init__(self, sink: BatchedLines, formatter: TimeNameMessage) -> None:
        self.sink, self.formatter, self.lines = sink, formatter, sink.lines
        self._second = -1
        self._prefix = ""  # the time to the second and a comma

    def add(self, message: str) -> bool:
        """False (nothing added) once the handler's formatter is another: the caller goes the general way."""
        sink = self.sink
        if sink.formatter is not self.formatter:
            return False
        created = time.time()
        second = int(created)
        if second != self._second:
            self._second, self._prefix = second, self.formatter.stamp(created) + ","
        lines = self.lines
        millis = _MILLIS[int((created - second) * 1000)]
        lines.append(f"{self._prefix}{millis} {access_log.name} {message}")
        if len(lines) >= sink.max_lines:
            sink.flush()
        return True


def _batched_sink(logger: logging.Logger) -> BatchedLines | None:
    """The access log's batching handler (`saga serve` sets one up) when it is the logger's only way out, so a
    line can be handed to it without a LogRecord; None otherwise (tests capturing logs, other handlers)."""
    handlers = logger.handlers
    if len(handlers) != 1 or logger.propagate or logger.filters or logger.disabled:
        return None
    handler = handlers[0]
    if not isinstance(handler, BatchedLines) or handler.filters or handler.level > logging.INFO:
        return None
    return handler


def _nothing() -> None:
    pass


_NO_HEADERS: dict[str, str] = {}
_ANSWER_DROPPED = forward.dropped_with(())
# A call relayed or handed to another worker keeps the client's headers as sent (its X-Forwarded-For too),
# so a replica sees the same headers whichever worker served the call; LOCAL_HEADER is other workers' only.
_TO_WORKER_DROPPED = forward.dropped_with((LOCAL_HEADER,))
# A relayed call's first byte and answer size are the owner's to limit (it may queue the call a long while).
_NO_FIRST_BYTE_LIMIT_S = 365 * 86400.0
_NO_ANSWER_LIMIT = 1 << 62


class _RelayedCall:
    """The reader's side of a call relayed inline (`FastServer.begin_relay`; proxy/inline_relay.py's
    `InlineCall`): the owner made every decision and did the accounting, so the answer is passed on as it
    came; what the inline relay cannot finish goes on as `relay_call` does."""

    def __init__(
        self,
        server: FastServer,
        owner: int,
        request: _Request,
        downstream: _Downstream,
        path: str,
        tenant: str | None,
    ) -> None:
        self.server, self.owner, self.request, self.downstream = server, owner, request, downstream
        self.path, self.tenant = path, tenant

    def takes_over(self, status: int) -> bool:
        return False  # every status is the owner's answer

    def may_retry_cut(self) -> bool:
        return False  # the owner retried what it could: its answer cut short is a 502

    def retry_cut(self, reason: str) -> None:
        raise AssertionError("a relayed call is never retried here")

    def first_byte(self) -> None:
        pass

    def answered(self, outcome: forward.Relayed) -> None:
        pass  # the owner that served the call records it (this relay does not read the answer)

    def relayed(self, outcome: forward.Relayed) -> None:
        self.server.counts.relayed += 1

    def abandoned(self) -> None:
        pass  # the relay closed its connection to the owner, which aborts the call there

    def failed(self, error: Exception) -> None:
        self.downstream.hand_over(_raise(error), _nothing)

    def resume(self, upstream: UpstreamAnswer | None, failure: str | None, timed_out: bool) -> None:
        """The owner's connection closed before answering: a stale pooled one is tried afresh
        (`relay_call`, which serves the call here if the owner cannot be reached); one closed after reading
        some of the answer is an owner that cannot be reached, as `relay_call` takes a `ConnectFailed`."""
        server, downstream = self.server, self.downstream
        if failure is None:
            work = server.relay_call(self.owner, self.request, downstream, self.path, self.tenant)
        else:
            work = server.serve_here(self.owner, failure, self.request, downstream, self.path, self.tenant)
        downstream.hand_over(work, _nothing)


async def _raise(error: Exception) -> None:
    raise error


class FastServer:
    """Protocol factory and shared state; `inner_socket` is where the aiohttp app listens (Unix socket)."""

    def __init__(self, app: web.Application, inner_socket: str) -> None:
        config = app[CONFIG]
        self.app = app
        self.cors = CorsPolicy.parse(config.cors_allowed_origins)
        self.api_keys = config.api_keys
        self.max_body_bytes = config.max_body_bytes
        self.access_log = config.access_log
        self.access_sink = _batched_sink(access_log)
        self.idle_timeout_s = config.stream_idle_timeout_s
        self.inner = UpstreamPool(unix_path=inner_socket)
        self.connections: set[_ClientConnection] = set()
        # With several workers (proxy/worker_set.py): links to the others, to hand them connections.
        self.workers = app.get(WORKERS)
        workers = self.workers
        self.links = (
            HandoffLinks(workers.handoff_socket) if workers is not None and workers.count > 1 else None
        )
        self.listener: HandoffListener | None = None
        self.handoff_bytes = config.max_body_bytes + MAX_HEAD_BYTES  # what a connection keeps for one
        self.counts = app.get(HANDOFF_COUNTS) or HandoffCounts()
        self.relays: dict[int, UpstreamPool] = {}
        self.owners: dict[str, int] = {}  # session key -> owner (a hash per call: ~2% of its CPU)
        self.response_owners = app.get(RESPONSE_OWNERS)
        self.chain_owners = app.get(CHAIN_OWNERS)
        self.quote_owners = app.get(QUOTE_OWNERS)
        self.relay_warned: set[int] = set()
        self.calls_server: asyncio.AbstractServer | None = None
        # the core's calls in flight (the dict itself): whether an answer waits for the turn's end (`answer`)
        self.calls_in_flight: dict[str, Any] = app[CORE].in_flight
        self._adoptions: set[asyncio.Task[None]] = set()
        self.draining = False  # the proxy is stopping: no connection is kept alive past its answers (`drain`)

    @property
    def access_sink(self) -> BatchedLines | None:
        return self._access_sink

    @access_sink.setter
    def access_sink(self, sink: BatchedLines | None) -> None:
        self._access_sink = sink
        self.access_lines: _AccessLines | None = None
        if sink is not None and isinstance(sink.formatter, TimeNameMessage):
            self.access_lines = _AccessLines(sink, sink.formatter)

    def __call__(self) -> _ClientConnection:
        return _ClientConnection(self)

    def adopt(self, sock: socket.socket, data: bytes) -> None:
        self.counts.received += 1
        conn = _ClientConnection(self, data)
        task = asyncio.get_running_loop().create_task(self._adopted(conn, sock))
        self._adoptions.add(task)
        task.add_done_callback(self._adoptions.discard)

    async def _adopted(self, conn: _ClientConnection, sock: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: conn, sock)
        except Exception:
            log.exception("could not serve a connection handed over by another worker")
            sock.close()

    def metrics_errors(self, cause: str) -> None:
        self.app[METRICS].errors.labels(cause).inc()

    def calls_socket(self, index: int) -> str:
        """Where worker `index`'s fast server takes the calls other workers relay to it."""
        assert self.workers is not None
        return os.path.join(self.workers.directory, f"calls-{index}.sock")

    async def listen_for_workers(self) -> None:
        """Adopts the connections other workers hand to this one (its hand-off socket) and serves the calls
        they relay to it (its calls socket)."""
        workers = self.workers
        if self.links is None or workers is None:
            return
        self.listener = HandoffListener(workers.handoff_socket(workers.index), self.adopt, self.handoff_bytes)
        path = self.calls_socket(workers.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by this worker's previous run
        loop = asyncio.get_running_loop()
        self.calls_server = await loop.create_unix_server(lambda: _ClientConnection(self, relayed=True), path)

    def begin_relay(
        self, owner: int, request: _Request, downstream: _Downstream, path: str, tenant: str | None
    ) -> None:
        """`relay_call` from the connections' callbacks when an idle connection to the owner is pooled
        (proxy/inline_relay.py): no task, future or coroutine per call; else in a task, as `relay_call`."""
        pool = self.relay_pool(owner)
        headers = forward.forwarded_headers(request.headers, _NO_HEADERS, _TO_WORKER_DROPPED)
        pooled = pool.send_pooled("http://saga" + request.url, request.body, headers)
        if pooled is None:
            downstream.hand_over(self.relay_call(owner, request, downstream, path, tenant), _nothing)
            return
        key, conn = pooled
        call = _RelayedCall(self, owner, request, downstream, path, tenant)
        InlineRelay(
            call,
            downstream,
            pool,
            key,
            conn,
            _NO_HEADERS,
            _ANSWER_DROPPED,
            _NO_FIRST_BYTE_LIMIT_S,
            self.idle_timeout_s,
            False,
            False,
            _NO_ANSWER_LIMIT,
            False,  # the owner accounted for the answer
            path,
        )

    def relay_pool(self, owner: int) -> UpstreamPool:
        pool = self.relays.get(owner)
        if pool is None:
            pool = self.relays[owner] = UpstreamPool(unix_path=self.calls_socket(owner))
        return pool

    async def relay_call(
        self, owner: int, request: _Request, downstream: _Downstream, path: str, tenant: str | None
    ) -> None:
        """A call of `owner`'s session on a connection that moved once already: sent to the owner's fast
        server over its calls socket and the answer relayed (the owner applies every timeout upstream). If
        the owner cannot be reached, the call is served here (counted in `HandoffCounts.failed`)."""
        pool = self.relay_pool(owner)
        headers = forward.forwarded_headers(request.headers, _NO_HEADERS, _TO_WORKER_DROPPED)
        try:
            upstream = await pool.request("http://saga" + request.url, request.body, headers, 10.0)
        except ConnectFailed as e:
            await self.serve_here(owner, str(e), request, downstream, path, tenant)
            return
        self.counts.relayed += 1
        await forward.relay(downstream, upstream, {}, lambda: None, self.idle_timeout_s, path=path)

    async def serve_here(
        self,
        owner: int,
        failure: str,
        request: _Request,
        downstream: _Downstream,
        path: str,
        tenant: str | None,
    ) -> None:
        """A call `owner` cannot be reached for is served here (counted in `HandoffCounts.failed`)."""
        self.counts.failed += 1
        if owner not in self.relay_warned:
            self.relay_warned.add(owner)
            log.warning("cannot relay a call to worker %d (%s): serving its calls here", owner, failure)
        await serve_call(self.app, path, CIMultiDict(request.headers), request.body, tenant, downstream)

    async def hand_off(self, request: _Request, downstream: _Downstream) -> None:
        """Serves a request with the aiohttp app: sent as it came over the Unix socket, answer relayed.

        Without a client's `LOCAL_HEADER`: only another worker may ask a worker to answer for itself alone."""
        headers = forward.forwarded_headers(request.headers, _NO_HEADERS, _TO_WORKER_DROPPED)
        head_only = request.method == "HEAD"  # asked as GET: the relay must know the answer has a body
        downstream._cors = (
            ""  # the app's answer has its CORS fields, its preflights' and none of the admin API
        )
        try:
            upstream = await self.inner.request(
                "http://saga" + request.url,
                request.body,
                headers,
                10.0,
                "GET" if head_only else request.method,
            )
        except ConnectFailed as e:
            log.error("the proxy's own app did not answer: %s", e)
            raise ProxyError(502, "internal error in the proxy") from e
        if head_only:
            upstream.close()
            length = None  # the GET's, which a HEAD answer states (RFC 9110 9.3.2); a stream's is not known
            for name, value in upstream.headers:
                if name.lower() == "content-length":
                    length = value
            answer = forward.forwarded_headers(upstream.headers, {}, forward.HOP_BY_HOP)
            downstream.answer_head(upstream.status, answer, length)
            return
        await forward.relay(
            downstream,
            upstream,
            {},
            lambda: None,
            self.idle_timeout_s,
            path=request.url,
            dropped=forward.HOP_BY_HOP,
        )

    def busy(self) -> int:
        """Client connections with a call in progress, requests waiting their turn or one being read (a
        draining proxy waits for none)."""
        return sum(1 for c in self.connections if c.in_progress())

    def drain(self) -> None:
        """A graceful stop begins (the listener is closed): connections are no longer kept alive. Each answer
        from now on says `Connection: close` and its connection closes once it is out (after the requests
        the client sent before it); connections with nothing in progress close now. Without it an agent
        reusing its connection kept sending calls to the stopping proxy until one was cut at the deadline."""
        self.draining = True
        for conn in list(self.connections):
            if conn.transport is not None and not conn.in_progress():
                conn.transport.close()

    def cut(self, message: str) -> None:
        """The drain's deadline: each call still in progress gets the proxy's own end before its connection
        closes: a 503 where no answer began, an error event where a stream did (the relay's own end for a
        replica that failed mid-answer, with `message`); a whole answer half sent can only be cut. Requests
        the client sent after it on the same connection (pipelined) get the 503 too, in order, the last one
        saying `Connection: close`."""
        when = retry_after(self.app[CONFIG].retry_after_s)  # (as every 503 of the proxy: it was "1")
        stopping = ProxyError(503, message, code="shutting_down", headers={"Retry-After": when})
        for conn in list(self.connections):
            downstream = conn.current if conn._busy() else None
            if conn.transport is None or not (downstream is not None or conn.queue):
                continue
            with contextlib.suppress(ConnectionError, RuntimeError):
                ended = True
                if downstream is not None:
                    ended = _cut_answer(downstream, stopping)
                    if conn._logs_access and conn.inline is None:  # (a relay's end logs its own line)
                        elapsed = time.perf_counter() - downstream.started
                        conn._log_access(downstream.request, downstream, elapsed, 499)
                while ended and conn.queue:
                    request = conn.queue.popleft()
                    queued = _Downstream(conn, request)
                    forward.answer_error(queued, stopping, request.url)
                    if conn._logs_access:
                        conn._log_access(request, queued, 0.0)
                conn.flush()

    def close(self) -> None:
        for conn in list(self.connections):
            if conn.task is not None:
                conn.task.cancel()
            if conn.transport is not None:
                conn.transport.close()
        self.inner.close()
        if self.listener is not None:
            self.listener.close()
        if self.links is not None:
            self.links.close()
        if self.calls_server is not None:
            self.calls_server.close()
        for pool in self.relays.values():
            pool.close()
