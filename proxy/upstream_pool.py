"""The data path's HTTP/1.1 client to replicas: pooled keep-alive connections, httptools parsing.

Part of the forwarding data path (proxy/forward.py is its only user). aiohttp's ClientSession spends most of a
proxied call's CPU in per-request Python objects; this client keeps a list of idle connections per replica,
writes each request as one buffer and hands the answer's body on as the chunks arrive.

Contract:
- `UpstreamPool.request(url, body, headers, connect_timeout_s)` returns an `UpstreamAnswer` once the status
  line and headers are in. It raises `ConnectFailed` when no connection could be made or the replica closed
  a fresh connection before answering; a pooled connection that turns out stale (closed before any answer
  byte) is replaced by a fresh one once, transparently.
- Timeouts are timers on the connection's futures, not `asyncio.timeout` around the caller (a third of the
  cost): `first_byte_timeout_s` raises TimeoutError (and closes the connection) when the status line is
  late, `more(idle_timeout_s)` / `read(..., idle_timeout_s)` when the body stalls.
- `UpstreamAnswer.ready()` is the body bytes that arrived so far (chunked encoding already decoded) in one
  buffer, `more()` a wait for more that raises `BodyFailed` if the connection ends before the answer does;
  `read(limit)` collects the body
  (`read(max_bytes=...)` raises `AnswerTooLarge` once it grows past that, without reading the rest).
  `release()` returns a finished, keep-alive connection to the pool and closes any other; `close()` always
  closes (which makes a vLLM replica abort the call). Idle connections older than `idle_ttl_s` are not
  reused (uvicorn, which serves vLLM, closes idle keep-alive connections after 5 s).
- `send_pooled(url, body, headers)` is the callback-driven form (proxy/inline_relay.py): it writes the request
  on an idle pooled connection and returns it, or None (nothing sent) when none is idle; with `batched` the
  write waits for the end of this turn of the event loop, to go out with the turn's other writes (a
  connection closed before then sends nothing, as if it had closed before the write). The caller sets the
  connection's `listener`, whose `progress()` is called after every read and when the connection ends; it
  reads the connection's state (`headed`, `status`, `chunks`, `body_size`, `complete`, `broken`) and hands
  the connection back with `give_back` (pooled if the answer ended cleanly, else closed) or on to an
  `UpstreamAnswer`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

from proxy.http_limits import MAX_HEAD_BYTES, MAX_HEADERS

Key = tuple[str, int, bool]  # a replica's connection key: host, port, TLS


class ConnectFailed(Exception):
    """No answer could be had from the replica: nothing was answered, safe to try elsewhere."""


class BodyFailed(Exception):
    """The connection ended or broke before the answer's body was complete."""


class AnswerTooLarge(Exception):
    """The answer's body grew past the reader's limit (`read(max_bytes=...)`): the rest was not read."""


class Listener(Protocol):
    def progress(self) -> None: ...

    def deadline_passed(self) -> None:
        """The connection's deadline (`set_deadline`) came."""
        ...


class AnswerOutOfStep(Exception):
    """A replica's answer the proxy cannot relay as the answer to its request: a protocol switch (101) or
    bytes past the answer's end. The connection is closed, never pooled: what came next on it would be read
    as the next call's answer (another client's)."""


class AnswerHeadTooLarge(Exception):
    """A replica's answer had more header fields or bytes than the proxy reads (proxy/http_limits.py: a
    replica, or something in front of it, that sends more is broken; unbounded, 200,000 fields or one
    header of 16 MB were held and relayed whole)."""


_SMALL_PIECE = 256  # body pieces smaller than this are merged ...
_MERGE_RUN = 256  # ... once this many have come (each byte is copied at most once more)
MAX_UNREAD_BYTES = 256 * 1024  # a coroutine reader's body held before reading pauses (`on_body`)

# What a closed connection's `parser` is: no answer is parsed after the connection is lost.
_SPENT_PARSER = httptools.HttpResponseParser(object())


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.loop = asyncio.get_running_loop()
        # Set when the answer is awaited as a future (`request`); None for a listener's call.
        self.headers_ready: asyncio.Future[None] | None = self.loop.create_future()
        self.listener: Listener | None = None
        self.headed = False  # the status line and headers are in
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.content_type = ""
        self.chunks: list[bytes] = []
        self.body_size = 0  # the answer's body bytes so far (a whole answer's limit)
        self.waiter: asyncio.Future[None] | None = None
        self.complete = False
        self.keep_alive = False
        self.until_close = False
        self.broken: BaseException | None = None
        self.got_bytes = False
        self.idle_since = 0.0
        self._name = b""
        self._head_bytes = 0  # the answer's header bytes so far (bounded by MAX_HEAD_BYTES)
        self.interim = False  # reading an interim (1xx) answer, which the final one follows
        self.idle = False  # in the pool: bytes arriving now were not asked for
        self._small = 0  # body pieces under _SMALL_PIECE bytes since the last merge (on_body)
        # A coroutine reader's body bytes not taken yet, and whether reading paused on them (`on_body`).
        self.unread = 0
        self.flow_paused = False
        self.deadline = 0.0  # when the listener's deadline comes (loop time); 0.0: none
        self._alarm: asyncio.TimerHandle | None = None  # the one loop timer behind the deadlines
        self._alarm_at = 0.0
        self._batched: list[bytes] = []  # written at the end of this turn of the loop (`write_batched`)

    def write_batched(self, data: bytes) -> None:
        """Writes `data` at the end of this turn of the loop, when the writes of the turn's other calls go
        out too: a replica woken by the first reads the rest in the same wake-up."""
        if not self._batched:
            self.loop.call_soon(self._write_batch)
        self._batched.append(data)

    def _write_batch(self) -> None:
        data = b"".join(self._batched) if len(self._batched) > 1 else self._batched[0]
        self._batched.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        if self.idle:  # the replica wrote while no request was out: out of step with it, never reused
            if self.transport is not None:
                self.transport.close()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            self._fail(e)
            if self.transport is not None:
                self.transport.close()
        listener = self.listener
        if listener is not None:  # after the parser returned: the listener may hand the connection back
            listener.progress()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._alarm is not None:  # else it would hold the connection until it rang
            self._alarm.cancel()
            self._alarm = None
        if self.until_close and exc is None and self.headed and not self.complete:
            self.complete = True  # a body without a length ends when the connection does
            self._wake()
        if not self.complete:
            self._fail(exc or ConnectionResetError("the replica closed the connection"))
        listener = self.listener
        if listener is not None:
            listener.progress()
        # The parser calls back into this connection, a reference cycle that only a full garbage collection
        # would free, and those are rare here (proxy/server.py): with a parser of its own no longer, a closed
        # connection (its buffers too) is freed as soon as nothing else holds it.
        self.parser = _SPENT_PARSER

    # -- the listener's deadline --------------------------------------------------------------------

    def set_deadline(self, at: float) -> None:
        """The listener's `deadline_passed()` runs at loop time `at`, unless the deadline is set again or
        cleared first. One loop timer per connection, made again only when it would ring too late: a call
        on a pooled connection usually just moves the deadline on (a loop timer per call cost ~0.7 µs)."""
        self.deadline = at
        alarm = self._alarm
        if alarm is None or at < self._alarm_at:
            if alarm is not None:
                alarm.cancel()
            self._alarm_at = at
            self._alarm = self.loop.call_at(at, self._alarm_rang)

    def clear_deadline(self) -> None:
        self.deadline = 0.0

    def _alarm_rang(self) -> None:
        self._alarm = None
        deadline = self.deadline
        if deadline == 0.0:
            return
        if self.loop.time() < deadline:  # moved on since the timer was made (or the timer rang early)
            self._alarm_at = deadline
            self._alarm = self.loop.call_at(deadline, self._alarm_rang)
            return
        self.deadline = 0.0
        listener = self.listener
        if listener is not None:
            listener.deadline_passed()

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # more bytes after the answer's end: a second answer nobody asked for
            self.keep_alive = False
            raise AnswerOutOfStep("the replica sent bytes past its answer's end")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headed:  # a chunked answer's trailer fields: not relayed (they are not part of the head)
            return
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._head_too_large(f"headers over {MAX_HEAD_BYTES} bytes")
        if name:
            if len(self.headers) >= MAX_HEADERS:
                self._head_too_large(f"more than {MAX_HEADERS} header fields")
            self._name = name
            self.headers.append((name.decode("latin-1"), value.decode("latin-1")))
        else:  # a header value continued in another data chunk
            last_name, last_value = self.headers[-1]
            self.headers[-1] = (last_name, last_value + value.decode("latin-1"))

    def _head_too_large(self, what: str) -> None:
        # Failed first, so the error the call reports is this one, not the parser's wrapper around it
        # (httptools turns an exception raised here into HttpParserCallbackError; data_received closes).
        error = AnswerHeadTooLarge(f"the replica's answer has {what}")
        self._fail(error)
        raise error

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:  # the proxy speaks HTTP to replicas, nothing else
                error = AnswerOutOfStep("the replica switched protocols (101)")
                self._fail(error)
                raise error
            # An interim answer (100 Continue, 103 Early Hints): skipped; the final answer follows it.
            self.interim = True
            self.headers, self._head_bytes = [], 0
            return
        self.status = status
        sized, content_type = False, ""
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == "content-type":
                content_type = value.split(";", 1)[0].strip().lower()
            elif lowered == "content-length" or lowered == "transfer-encoding":
                sized = True
        self.content_type = content_type
        self.until_close = not sized and self.status not in (204, 304)
        self.headed = True
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        chunks = self.chunks
        chunks.append(body)
        size = len(body)
        self.body_size += size
        if size < _SMALL_PIECE:
            # Tiny pieces (a chunked answer of 1-byte chunks) would cost ~40 bytes of Python object each
            # until the answer is whole: merged in runs, so what is held stays near the bytes received.
            self._small += 1
            if self._small >= _MERGE_RUN:
                self._small = 0
                run = min(_MERGE_RUN, len(chunks))  # a reader may have taken some: those are gone
                merged = b"".join(chunks[-run:])
                del chunks[-run:]
                chunks.append(merged)
        if self.listener is None:  # a coroutine reader's (a listener pauses reading itself: inline_relay)
            self.unread += size
            if self.unread > MAX_UNREAD_BYTES and not self.flow_paused and self.transport is not None:
                # its client reads slower than the replica writes: without a pause the whole answer piled
                # up here (a client that stopped reading held ~500 MB of it until its stream timed out)
                self.transport.pause_reading()
                self.flow_paused = True
        if self.waiter is not None:  # a coroutine reader waits (a listener reads after the parser returns)
            self._wake()

    def taken(self) -> None:
        """The reader took every body byte that arrived: reading goes on if it paused."""
        self.unread = 0
        if self.flow_paused:
            self.flow_paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.keep_alive = self.parser.should_keep_alive()  # only valid here, not after
        self.complete = True
        self._wake()

    # -- internals ----------------------------------------------------------------------------------

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.broken is None:
            self.broken = exc
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_exception(ConnectionResetError(str(exc)))
        self._wake()

    def time_out(self) -> None:
        """The first-byte timer fired: the call is abandoned (closing makes a vLLM replica abort it)."""
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_exception(TimeoutError())
        if self.transport is not None:
            self.transport.close()

    def reset_for_request(self, awaited: bool = True) -> None:
        # The parser goes on to the next answer on the connection: no new one needed.
        self.headers_ready = self.loop.create_future() if awaited else None
        self.listener, self.headed = None, False
        self.status, self.headers, self.chunks, self.content_type = 0, [], [], ""
        self.body_size = self._head_bytes = 0
        self.complete, self.keep_alive, self.broken, self.got_bytes = False, False, None, False
        self.until_close = self.interim = False
        self._small = 0
        self.taken()


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def _next_data(conn: _Connection, idle_timeout_s: float | None) -> None:
    """Waits until the connection wakes its waiter (data, the end or a break); TimeoutError when nothing
    came for `idle_timeout_s`."""
    waiter = conn.waiter = conn.loop.create_future()
    timer = None if idle_timeout_s is None else conn.loop.call_later(idle_timeout_s, _expire, waiter)
    try:
        await waiter
    finally:
        conn.waiter = None
        if timer is not None:
            timer.cancel()


def _cut(body: bytes, limit: int | None) -> bytes:
    if limit is None or len(body) <= limit:
        return body
    return body[:limit]


class UpstreamAnswer:
    def __init__(self, pool: UpstreamPool, key: tuple[str, int, bool], conn: _Connection) -> None:
        self._pool, self._key, self._conn = pool, key, conn
        self.status = conn.status
        self.headers = conn.headers
        self.content_type = conn.content_type  # media type only, lowercased
        self._done = False

    def ready(self) -> bytes:
        """The body bytes that arrived and were not taken yet, as one buffer (b"" when none did): a relay
        that fell behind forwards what piled up in one write."""
        conn = self._conn
        if not conn.chunks:
            return b""
        pending, conn.chunks = conn.chunks, []
        conn.taken()
        return pending[0] if len(pending) == 1 else b"".join(pending)

    async def more(self, idle_timeout_s: float | None = None) -> None:
        """Returns once body bytes are ready or the body ended (at once if so already); raises BodyFailed when
        the connection broke first, TimeoutError when nothing came for `idle_timeout_s`."""
        conn = self._conn
        if conn.chunks or conn.complete:
            return
        if conn.broken is None:
            await _next_data(conn, idle_timeout_s)
            if conn.chunks or conn.complete:
                return
        if conn.broken is not None:
            raise BodyFailed(repr(conn.broken))

    async def read(
        self, limit: int | None = None, idle_timeout_s: float | None = None, max_bytes: int | None = None
    ) -> bytes:
        """The body, cut to its first `limit` bytes; raises AnswerTooLarge (reading no more) once it is
        over `max_bytes`."""
        conn = self._conn
        if max_bytes is not None and conn.body_size > max_bytes:
            raise AnswerTooLarge(f"the answer is over {max_bytes} bytes")
        if conn.complete:  # the whole body came with the head (a short answer): no need to wait or iterate
            return _cut(self.ready(), limit)
        parts: list[bytes] = []
        size = 0
        while True:  # returns from inside: after a `while True` mypy (so mypyc) mistypes `limit` as int
            chunk = self.ready()
            if not chunk:
                if conn.complete:
                    return b"".join(parts)
                await self.more(idle_timeout_s)
                continue
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                return b"".join(parts)[:limit]
            if max_bytes is not None and size > max_bytes:
                raise AnswerTooLarge(f"the answer is over {max_bytes} bytes")

    @property
    def at_eof(self) -> bool:
        return self._conn.complete and not self._conn.chunks

    def release(self) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        if conn.complete and not conn.chunks and conn.keep_alive and conn.transport is not None:
            self._pool._put(self._key, conn)
        elif conn.transport is not None:
            conn.transport.close()

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        if self._conn.transport is not None:
            self._conn.transport.close()


class UpstreamPool:
    """`unix_path`: every connection goes to this Unix socket whatever the URL's host (the fast server's
    hand-off to the aiohttp app, proxy/fast_server.py)."""

    def __init__(
        self, idle_ttl_s: float = 4.0, max_idle_per_replica: int = 256, unix_path: str | None = None
    ) -> None:
        self.unix_path = unix_path
        self.idle_ttl_s = idle_ttl_s
        self.max_idle = max_idle_per_replica
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        self._targets: dict[tuple[str, str], tuple[tuple[str, int, bool], str]] = {}

    def _put(self, key: tuple[str, int, bool], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if self._closed or len(idle) >= self.max_idle:
            if conn.transport is not None:
                conn.transport.close()
            return
        conn.idle_since = time.monotonic()
        conn.idle = True
        conn.taken()  # an idle connection reads: a replica closing it is seen at once
        idle.append(conn)

    def _take(self, key: tuple[str, int, bool], awaited: bool = True) -> _Connection | None:
        idle = self._idle.get(key)
        horizon = time.monotonic() - self.idle_ttl_s
        while idle:
            conn = idle.pop()
            conn.idle = False
            if conn.transport is not None and not conn.transport.is_closing() and conn.idle_since >= horizon:
                conn.reset_for_request(awaited)
                return conn
            if conn.transport is not None:
                conn.transport.close()
        return None

    async def _connect(self, key: tuple[str, int, bool], timeout_s: float) -> _Connection:
        host, port, tls = key
        context = None
        if tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(timeout_s):
                loop = asyncio.get_running_loop()
                if self.unix_path is not None:
                    transport, conn = await loop.create_unix_connection(_Connection, self.unix_path)
                else:
                    transport, conn = await loop.create_connection(_Connection, host, port, ssl=context)
        except (OSError, TimeoutError) as e:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {e!r}") from e
        # uvloop may call connection_made only after create_connection returned.
        conn.transport = transport
        return conn

    def _target(self, method: str, url: str) -> tuple[tuple[str, int, bool], str]:
        """The connection key and the request's first two lines, parsed once per URL (a replica's routes)."""
        cached = self._targets.get((method, url))
        if cached is None:
            parts = urlsplit(url)
            tls = parts.scheme == "https"
            key = (parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80), tls)
            target = parts.path + ("?" + parts.query if parts.query else "")
            if len(self._targets) >= 1024:  # URLs from the fast server's hand-off are the client's: bounded
                self._targets.clear()
            cached = self._targets[(method, url)] = (
                key,
                f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n",
            )
        return cached

    def _payload(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[Key, bytes]:
        key, request_line = self._target(method, url)
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        return key, f"{request_line}{lines}Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body

    def send_pooled(
        self, url: str, body: bytes, headers: Mapping[str, str], method: str = "POST", batched: bool = False
    ) -> tuple[Key, _Connection] | None:
        """Writes the request on an idle pooled connection and returns it; None, sending nothing, when no
        connection is idle. The answer is read through the connection's `listener`. `batched`: the write
        goes out at the end of this turn of the loop (`_Connection.write_batched`)."""
        key, payload = self._payload(method, url, body, headers)
        conn = self._take(key, awaited=False)
        if conn is None:
            return None
        assert conn.transport is not None
        if batched:
            conn.write_batched(payload)
        else:
            conn.transport.write(payload)
        return key, conn

    def give_back(self, key: Key, conn: _Connection) -> None:
        """A listener's connection: pooled again if its answer ended cleanly and it may be reused, else
        closed (which makes a vLLM replica abort a call still running)."""
        conn.listener = None
        if conn.complete and not conn.chunks and conn.keep_alive and conn.transport is not None:
            self._put(key, conn)
        elif conn.transport is not None:
            conn.transport.close()

    async def request(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        connect_timeout_s: float,
        method: str = "POST",
        first_byte_timeout_s: float | None = None,
    ) -> UpstreamAnswer:
        """Raises TimeoutError when the status line took longer than `first_byte_timeout_s` after sending."""
        key, payload = self._payload(method, url, body, headers)
        conn = self._take(key)
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect(key, connect_timeout_s)
            if await self._headed(conn, key, payload, reused, first_byte_timeout_s):
                return UpstreamAnswer(self, key, conn)
            conn, reused = None, False  # a stale pooled connection: once more on a fresh one

    async def _headed(
        self, conn: _Connection, key: Key, payload: bytes, reused: bool, first_byte_timeout_s: float | None
    ) -> bool:
        """Sends `payload` on `conn` and waits for the answer's head; False when `conn`, pooled (`reused`),
        turned out stale (closed before any answer byte)."""
        assert conn.transport is not None and conn.headers_ready is not None
        conn.transport.write(payload)
        timer = None
        if first_byte_timeout_s is not None:
            timer = conn.loop.call_later(first_byte_timeout_s, conn.time_out)
        try:
            await conn.headers_ready
        except ConnectionResetError as e:
            if reused and not conn.got_bytes:
                return False
            raise ConnectFailed(f"{key[0]}:{key[1]} closed before answering: {e}") from e
        except BaseException:
            if conn.transport is not None:  # cancelled or timed out: abandon the call upstream
                conn.transport.close()
            # Nobody awaits it any more: mark its eventual error as seen, so asyncio does not warn.
            conn.headers_ready.add_done_callback(_consume)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        return True

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
