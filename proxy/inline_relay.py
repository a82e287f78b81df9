"""A call's upstream answer relayed from the connections' callbacks: no task or coroutine on the common path.

The coroutine path (proxy/call.py `Call.run`, proxy/forward.py `relay`) costs a task per request, a future
per wait and a coroutine per step. This relay is driven by the upstream connection's `progress()` (called
after each read and when the connection ends, proxy/upstream_pool.py) and by the client connection
(`writable`, `client_gone`); it does what `forward.relay` does, in the same order, and reports the same
`Relayed`.

Contract:
- It starts once the request went out on a pooled connection (`UpstreamPool.send_pooled`). Whatever needs
  waiting or a decision goes back to the coroutine path through `InlineCall.resume`, before any byte reached
  the client: the connection closed before answering (a stale pooled one is retried afresh, any other is a
  replica failure), no status line within the first-byte timeout, or a status the call handles itself
  (`InlineCall.takes_over`: a 5xx it may retry, a priority refusal).
- Otherwise it ends exactly once: `InlineCall.relayed(outcome)` (accounting) and then `done()` on the
  client side, or `InlineCall.abandoned()` when the client hung up (the upstream connection is closed, which
  makes a vLLM replica abort the call). A stream's head goes out with its first whole event; a stream
  whose replica fails or stalls for the idle timeout after that ends with one OpenAI-style error event. A
  whole answer that fails, or a stream before its first event, is asked of another replica while the call
  has retries left (`InlineCall.retry_cut`); else it is a 502 (a stream: the error event), as a whole answer
  that grows past `max_answer_bytes` is, as in `forward.relay`.
- With `account` False (a call relayed to the worker that owns its session, proxy/fast_server.py) the answer
  is passed on unread: its usage, message and response id are the owner's to read, and were.
- A client that does not keep up pauses reading from the replica until it drains (`writable`); the idle
  timeout does not run meanwhile, as the coroutine path does not time a drain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from proxy.errors import mid_answer_event
from proxy.forward import Relayed, answer_error, cut_answer, forwarded_headers, too_large_error
from proxy.sse_scan import StreamScanner, read_answer, whole_events, whole_response_id
from proxy.upstream_pool import BodyFailed, Key, UpstreamAnswer, UpstreamPool, _Connection

log = logging.getLogger("saga.proxy")


class InlineDownstream(Protocol):
    """The client side, as proxy/fast_server.py gives it: whole answers and a chunked stream without waiting,
    and the connection's part in the call's life."""

    status: int

    def answer(self, status: int, headers: Mapping[str, str], body: bytes) -> None: ...

    # Each queues its bytes and says whether the client is not keeping up (the relay should stop reading).
    def start_now(self, status: int, headers: Mapping[str, str]) -> bool: ...

    def write_now(self, chunk: bytes, at_once: bool = False) -> bool: ...

    def end_now(self) -> bool: ...

    def next_sequence_number(self) -> int | None:
        """As `forward.Downstream.next_sequence_number`."""
        ...

    def hold(self, relay: InlineRelay) -> None:
        """The relay serves the connection's request now: tell it of a hang-up and of room to write."""
        ...

    def hand_over(self, work: Coroutine[Any, Any, None], ended: Callable[[], None]) -> None:
        """The rest of the request is served by `work`, in a task; `ended()` is called when the task ends
        (however: a task cancelled before it ran never ran `work`)."""
        ...

    def done(self) -> None:
        """The answer ended: the connection goes on to its next request."""
        ...


class InlineCall(Protocol):
    """The call's side (proxy/call.py `Call`): its decisions and its single finish report."""

    def takes_over(self, status: int) -> bool: ...

    def may_retry_cut(self) -> bool:
        """A whole answer that broke off before any of it reached the client may be asked of another
        replica (`retry_cut`, which hands the rest over to the coroutine path)."""
        ...

    def retry_cut(self, reason: str) -> None: ...

    def first_byte(self) -> None: ...

    def answered(self, outcome: Relayed) -> None:
        """The answer (and a Responses API answer's id) is read; its last bytes are not out yet."""
        ...

    def relayed(self, outcome: Relayed) -> None: ...

    def abandoned(self) -> None: ...

    def failed(self, error: Exception) -> None:
        """Hands the rest over to the coroutine path, which raises `error` (logged, a 500)."""
        ...

    def resume(self, upstream: UpstreamAnswer | None, failure: str | None, timed_out: bool) -> None:
        """Hands the rest over to the coroutine path (`InlineDownstream.hand_over`)."""
        ...


class InlineRelay:
    def __init__(
        self,
        call: InlineCall,
        downstream: InlineDownstream,
        pool: UpstreamPool,
        key: Key,
        conn: _Connection,
        extra_headers: Mapping[str, str],
        extra_dropped: frozenset[str],  # forward.dropped_with(tuple(extra_headers))
        first_byte_timeout_s: float,
        idle_timeout_s: float,
        collect_answer: bool,
        strip_usage: bool,
        max_answer_bytes: int,
        account: bool = True,
        path: str = "",
    ) -> None:
        """`account`: read the answer's usage, message and response id for `InlineCall.relayed`; False for
        an answer another worker read them from already (proxy/fast_server.py's relayed calls).
        `path`: the call's route, whose shape the proxy's errors take (proxy/errors.py)."""
        self.call, self.downstream, self.pool, self.key, self.conn = call, downstream, pool, key, conn
        self.extra_headers = extra_headers
        self.dropped = extra_dropped
        self.idle_timeout_s = idle_timeout_s
        self.collect_answer, self.strip_usage = collect_answer, strip_usage
        self.max_answer_bytes = max_answer_bytes
        self.account = account
        self.path = path
        self.outcome: Relayed | None = None  # set once the status line is in and the relay owns the answer
        self.headers: dict[str, str] = {}
        self.scanner: StreamScanner | None = None  # set for a stream
        self.started = False  # a stream's head went out (with its first whole event)
        self.ended = False
        self.paused = False  # reading from the replica stopped until the client drains
        self.held = b""  # the start of an event not yet whole (sse_scan.whole_events)
        self.last = 0.0  # when the replica last sent something (the idle timeout)
        conn.listener = self
        conn.set_deadline(conn.loop.time() + first_byte_timeout_s)  # the first-byte timeout
        downstream.hold(self)

    # -- driven by the connections ------------------------------------------------------------------

    def progress(self) -> None:
        if self.ended:
            return
        try:
            if self.outcome is None and not self._headed():
                return
            if self.scanner is None:
                self._whole()
            else:
                self._stream()
        except Exception as e:  # a bug: the coroutine path's handling (logged, a 500 if nothing was sent)
            if self.ended:  # raised while reporting the end: the request is over already
                log.exception("error ending a relayed call")
                return
            self._stop(close=True)
            self.call.failed(e)

    def writable(self) -> None:
        if self.paused and not self.ended:
            self.paused = False
            if self.conn.transport is not None:
                self.conn.transport.resume_reading()
            self.progress()

    def client_gone(self) -> None:
        if self.ended:
            return
        self._stop(close=True)
        self.call.abandoned()

    # -- the answer ---------------------------------------------------------------------------------

    def _headed(self) -> bool:
        conn = self.conn
        if not conn.headed:
            if conn.broken is not None:  # closed (or garbled) before answering
                failure = None
                if conn.got_bytes:
                    host, port, _ = self.key
                    failure = f"unreachable ({host}:{port} closed before answering: {conn.broken})"
                self._stop(close=True)
                self.call.resume(None, failure, False)
            return False
        if self.call.takes_over(conn.status):
            self._stop(close=False)
            self.call.resume(UpstreamAnswer(self.pool, self.key, conn), None, False)
            return False
        self.outcome = Relayed(conn.status)
        self.headers = forwarded_headers(conn.headers, self.extra_headers, self.dropped)
        now = self.last = conn.loop.time()
        if not conn.complete:  # more of the body to come: the idle timeout runs from now on
            conn.set_deadline(now + self.idle_timeout_s)
        if conn.content_type == "text/event-stream":  # (its head goes out with its first whole event)
            self.scanner = StreamScanner(self.collect_answer, self.max_answer_bytes, self.path)
        return True

    def _whole(self) -> None:
        conn, outcome = self.conn, self.outcome
        assert outcome is not None
        if conn.body_size > self.max_answer_bytes:  # dropped: the connection is closed (not complete) or
            conn.chunks = []  # pooled again (complete: nothing of it is left unread)
            outcome.too_large = True
            outcome.status = 502  # what the client gets, and is counted
            try:
                answer_error(self.downstream, too_large_error(self.max_answer_bytes), self.path)
            except ConnectionError:
                outcome.client_gone = True
            self._end()
        elif conn.complete:
            pending, conn.chunks = conn.chunks, []
            body = pending[0] if len(pending) == 1 else b"".join(pending)
            self.call.first_byte()
            outcome.first_byte = True
            if self.account:
                outcome.usage, outcome.answer = read_answer(body)
                outcome.response_id = whole_response_id(body, self.path)
                self.call.answered(outcome)
            try:
                self.downstream.answer(outcome.status, self.headers, body)
            except ConnectionError:
                outcome.client_gone = True
            self._end()
        elif conn.broken is not None:
            self._whole_failed(repr(BodyFailed(repr(conn.broken))))
        else:
            self.last = conn.loop.time()

    def _whole_failed(self, error: str) -> None:
        assert self.outcome is not None
        if self.call.may_retry_cut():  # nothing of it was sent: another replica may answer it
            self._stop(close=True)
            self.call.retry_cut(error)
            return
        try:
            cut_answer(self.downstream, self.outcome, error, self.path)
        except ConnectionError:
            self.outcome.client_gone = True
        self._end()

    def _stream(self) -> None:
        conn, outcome, scanner, downstream = self.conn, self.outcome, self.scanner, self.downstream
        assert outcome is not None and scanner is not None
        try:
            if conn.chunks:  # all that arrived since the last write: one scan and one write for it
                pending, conn.chunks = conn.chunks, []
                chunk = pending[0] if len(pending) == 1 else b"".join(pending)
                self.last = conn.loop.time()
                if not outcome.first_byte:
                    self.call.first_byte()
                    outcome.first_byte = True
                if self.strip_usage:  # the scanner passes whole events only
                    chunk = scanner.feed_stripping_usage(chunk)
                else:
                    if self.account:
                        scanner.feed(chunk)
                    if not conn.complete:  # an event's start goes out once whole, never if the replica fails
                        chunk, self.held = whole_events(self.held, chunk)
                    elif self.held:
                        chunk, self.held = self.held + chunk, b""
                if chunk and not self.started:
                    self.started = True
                    downstream.start_now(outcome.status, self.headers)
                # A chunk with more to come goes out now; the last waits to go with the stream's end.
                if chunk and downstream.write_now(chunk, not conn.complete) and not conn.complete:
                    if conn.transport is not None:
                        conn.transport.pause_reading()
                    self.paused = True
            if conn.complete:
                rest = scanner.flush() if self.strip_usage else self.held  # the last bytes, as they came
                self.held = b""
                if not self.started:
                    self.started = True
                    downstream.start_now(outcome.status, self.headers)
                if rest:
                    downstream.write_now(rest)
                if self.account:
                    outcome.usage = scanner.usage()
                    outcome.answer = scanner.answer()
                    outcome.response_id = scanner.response_id
                    self.call.answered(outcome)
                downstream.end_now()
                self._end()
            elif conn.broken is not None:
                self._stream_failed(repr(BodyFailed(repr(conn.broken))))
        except ConnectionError:
            outcome.client_gone = True
            self._end()

    def _stream_failed(self, error: str) -> None:
        """Ends the stream with an error event (OpenAI's or Anthropic's), its framing intact; one that failed
        before its first whole event (none of it sent) is asked of another replica while retries are left."""
        assert self.outcome is not None
        if not self.started and self.call.may_retry_cut():
            self._stop(close=True)
            self.call.retry_cut(error)
            return
        self.outcome.upstream_error = error
        try:
            downstream = self.downstream
            if not self.started:
                self.started = True
                downstream.start_now(self.outcome.status, self.headers)
            number = downstream.next_sequence_number()  # (a Responses API stream's)
            downstream.write_now(mid_answer_event(self.path, error == "stalled", number))
            downstream.end_now()
        except ConnectionError:
            pass
        self._end()

    def deadline_passed(self) -> None:
        if self.ended:
            return
        loop = self.conn.loop
        if self.outcome is None:  # no status line within the first-byte timeout
            self._stop(close=True)
            self.call.resume(None, None, True)
            return
        left = self.idle_timeout_s - (loop.time() - self.last)
        if self.paused or left > 0:
            self.conn.set_deadline(loop.time() + (self.idle_timeout_s if self.paused else left))
            return
        if self.scanner is None:
            self._whole_failed(repr(TimeoutError()))
        else:
            self._stream_failed("stalled")

    # -- ending -------------------------------------------------------------------------------------

    def _stop(self, close: bool) -> None:
        """The relay lets go of the upstream connection (closing it, which aborts the call upstream)."""
        self.ended = True
        self.conn.clear_deadline()
        conn = self.conn
        conn.listener = None
        if close and conn.transport is not None:
            conn.transport.close()

    def _end(self) -> None:
        """The answer ended (or the client went away mid-answer): report it once, free the connection."""
        assert self.outcome is not None
        self.ended = True
        self.conn.clear_deadline()
        if self.paused and self.conn.transport is not None:
            self.conn.transport.resume_reading()
        self.pool.give_back(self.key, self.conn)
        try:
            self.call.relayed(self.outcome)
        finally:
            self.downstream.done()
