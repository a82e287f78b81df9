"""The forwarding data path: the client's bytes to a replica, the replica's bytes back, unchanged.

Kept behind this one small module so it can move to a lower-level transport if the overhead benchmark asks for
it. Nothing here decides anything: it opens the upstream call, relays the answer (streamed as it arrives for
SSE, whole otherwise) and reports what happened in a `Relayed` for the scheduler and the logs.

Failure contract:
- `open_upstream` raises `UpstreamUnreachable` when nothing was answered (connect refused or timed out, the
  replica closed before a status line): safe to try another replica. It raises `UpstreamTimeout` when the
  replica accepted the call but sent no status line within the first-byte timeout: the replica may be
  working on it, so the call is not retried.
- `relay` never raises for an upstream or client failure. Once a stream's headers went out, a replica that
  dies or stalls longer than the idle timeout ends the stream with one OpenAI-style error event and its
  chunked framing's end, so no client waits on a dead stream (the replica's connection is closed; the
  client's stays usable for its next call: `_end_with_error`). A client that hangs up stops the relay and
  closes the upstream connection, which makes the replica abort the call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, cast

from aiohttp import web

from proxy.config import ProxyConfig
from proxy.data_structs import Relayed
from proxy.errors import ProxyError, mid_answer_event, refusal_body
from proxy.sse_scan import (
    DEFAULT_COLLECT_LIMIT,
    SentNumbers,
    StreamScanner,
    numbers_for,
    parse_usage,
    read_answer,
    whole_events,
    whole_response_id,
)
from proxy.upstream_pool import AnswerTooLarge, BodyFailed, ConnectFailed, UpstreamAnswer, UpstreamPool

# Hop-by-hop headers (RFC 9110 7.6.1) and those aiohttp recomputes for the new connection.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",  # the proxy has read the whole body already: no 100-continue upstream
    }
)
# ... and a replica's CORS fields (vLLM's `--allowed-origins`, every origin by default): the proxy's own
# policy says who may read its answers (`cors_allowed_origins`, proxy/cors.py); the proxy's own app's fields
# are its policy (`relay(dropped=HOP_BY_HOP)`)
_NOT_FORWARDED = HOP_BY_HOP | {
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
}


__all__ = [
    "AiohttpDownstream",
    "Downstream",
    "Relayed",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "client_header_pairs",
    "forwarded_headers",
    "open_upstream",
    "parse_usage",
    "relay",
]


class UpstreamUnreachable(Exception):
    """The replica could not be reached, or closed before answering: safe to try another replica."""


class UpstreamTimeout(Exception):
    """The replica took the call but sent no status line within the first-byte timeout."""


class WholeAnswerCut(Exception):
    """An answer broke off (or stalled past the idle timeout) before any of it reached the client (a whole
    answer, or a stream before its first whole event), with `relay(retry_cut=True)`: the call may be asked of
    another replica (proxy/call_attempts.py `cut_short`)."""


class Downstream(Protocol):
    """The client side of a call, whichever server holds the connection (aiohttp or proxy/fast_server.py).

    `answer` sends a whole answer; `start`, `write` and `end` send a chunked stream. The stream methods raise
    ConnectionError once the client is gone."""

    def answer(self, status: int, headers: Mapping[str, str], body: bytes) -> None: ...

    async def start(self, status: int, headers: Mapping[str, str]) -> None: ...

    async def write(self, chunk: bytes) -> None: ...

    async def end(self) -> None: ...

    def next_sequence_number(self) -> int | None:
        """On a Responses API stream, the `sequence_number` after the last event sent (None elsewhere, or
        when none sent had one): the error event that ends a cut stream carries it."""


class AiohttpDownstream:
    """`Downstream` over an aiohttp request; the handler returns `response`."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        request[DOWNSTREAM] = self
        self.response: web.StreamResponse | None = None
        self.numbers: SentNumbers | None = None  # a Responses API stream's (its error event's number)

    def answer(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.response = web.Response(status=status, body=body, headers=aiohttp_header_values(headers))

    async def start(self, status: int, headers: Mapping[str, str]) -> None:
        self.response = web.StreamResponse(status=status, headers=aiohttp_header_values(headers))
        self.numbers = numbers_for(self.request.path)
        await self.response.prepare(self.request)

    async def write(self, chunk: bytes) -> None:
        assert self.response is not None
        if self.numbers is not None:
            self.numbers.sent(chunk)
        await self.response.write(chunk)

    def next_sequence_number(self) -> int | None:
        return self.numbers.next() if self.numbers is not None else None

    async def end(self) -> None:
        assert self.response is not None
        await self.response.write_eof()


# The request's key for its `AiohttpDownstream` (what the drain's end reads: proxy/aiohttp_drain.py)
DOWNSTREAM = web.RequestKey("downstream", AiohttpDownstream)


def aiohttp_header_values(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers` as aiohttp must be given them to write the bytes they stand for: the upstream pool reads a
    value one character a byte (latin-1) and aiohttp writes values as UTF-8, so a non-ASCII value is read
    back as the UTF-8 it holds ("é" went out as "Ã©"). A byte that is not UTF-8 has no character aiohttp
    writes as that byte: it goes out as U+FFFD (the fast server's relay passes it on as it is)."""
    fixed: dict[str, str] | None = None
    for name, value in headers.items():
        if not value.isascii():  # the usual headers are ASCII: nothing copied for them
            if fixed is None:
                fixed = dict(headers)
            fixed[name] = value.encode("latin-1", "replace").decode("utf-8", "replace")
    return headers if fixed is None else fixed


class Answers(Protocol):
    def answer(self, status: int, headers: Mapping[str, str], body: bytes) -> None: ...


def answer_error(downstream: Answers, err: ProxyError, path: str = "") -> None:
    body = refusal_body(path, err)
    downstream.answer(err.status, {**err.headers, "Content-Type": "application/json"}, body)


def cut_answer(downstream: Answers, outcome: Relayed, error: str, path: str) -> None:
    """A whole answer that broke off or stalled mid-body, none of it sent: the client's 502, counted as
    one (it was counted as the replica's 200)."""
    outcome.upstream_error = error
    outcome.status = 502
    outcome.whole_cut = True
    failure = ProxyError(502, "the replica failed while answering", code="upstream_error")
    answer_error(downstream, failure, path)


def too_large_error(max_answer_bytes: int) -> ProxyError:
    return ProxyError(
        502,
        f"the replica's answer is larger than the proxy's limit of {max_answer_bytes} bytes "
        "(max_answer_bytes)",
        code="upstream_answer_too_large",
    )


_AUTHORIZATION = frozenset({"authorization"})
_CLIENT_KEYS = frozenset({"authorization", "x-api-key"})


def upstream_auth(headers: dict[str, str], config: ProxyConfig) -> None:
    """The replica sees the proxy's upstream key, never a client key the proxy checked itself (in either
    header proxy/auth.py reads one from)."""
    if config.api_keys or config.upstream_api_key:
        dropped = _CLIENT_KEYS if config.api_keys else _AUTHORIZATION
        for name in [k for k in headers if k.lower() in dropped]:
            del headers[name]
    if config.upstream_api_key:
        headers["Authorization"] = f"Bearer {config.upstream_api_key}"


def forwarded_headers(
    headers: Mapping[str, str] | list[tuple[str, str]],
    extra: Mapping[str, str],
    dropped: frozenset[str] | None = None,
) -> dict[str, str]:
    """The headers to pass on: hop-by-hop ones dropped, and any the proxy sets itself (`extra`, whatever the
    client's spelling) replaced, so each is sent once. `headers`: a mapping, or the parsed (name, value)
    pairs of proxy/upstream_pool.py and proxy/fast_server.py. `dropped`, when given, must be
    `dropped_with(tuple(extra))` (a caller whose `extra` always has the same names keeps it)."""
    # A list is told apart exactly; `isinstance(x, Mapping)` is an ABC check, ~0.7 µs twice a call.
    pairs = headers if type(headers) is list else cast(Mapping[str, str], headers).items()
    if dropped is None:
        dropped = dropped_with(tuple(extra)) if extra else _NOT_FORWARDED
    out = {}
    connection = ""
    for k, v in pairs:
        lowered = k.lower()
        if lowered not in dropped:
            if k not in out:  # a field given twice is read as its first line, as aiohttp reads it
                out[k] = v
        elif lowered == "connection":
            connection = v
    if connection and connection.lower() not in _PLAIN_CONNECTION:
        _drop_nominated(out, connection)
    out.update(extra)
    return out


_PLAIN_CONNECTION = frozenset({"keep-alive", "close", "upgrade"})


def _drop_nominated(out: dict[str, str], connection: str) -> None:
    """RFC 9110 7.6.1: the headers a Connection header names are this hop's, not passed on."""
    nominated = {token.strip().lower() for token in connection.split(",")}
    for name in [k for k in out if k.lower() in nominated]:
        del out[name]


def client_header_pairs(request: web.Request) -> list[tuple[str, str]]:
    """An aiohttp request's header lines as the client sent them, one character a byte (latin-1), as the fast
    server reads them: aiohttp's own `headers` decode a value as UTF-8, an invalid byte (which HTTP allows in
    a value) as a lone surrogate that no header encoding takes, and a valid non-ASCII one as a character the
    upstream pool would send as another byte."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.raw_headers]


_dropped: dict[tuple[str, ...], frozenset[str]] = {}


def dropped_with(names: tuple[str, ...]) -> frozenset[str]:
    """The headers not passed on when the proxy sets `names` itself; a few name sets recur, so kept."""
    found = _dropped.get(names)
    if found is None:
        if len(_dropped) >= 64:
            _dropped.clear()
        found = _dropped[names] = _NOT_FORWARDED.union([k.lower() for k in names])
    return found


# The names the call path sets itself, whose dropped sets are looked up once.
ANSWER_EXTRA = dropped_with(("X-Saga-Replica", "X-Session-ID"))
REQUEST_EXTRA = dropped_with(("X-Session-ID",))
REQUEST_EXTRA_PRIORITY = dropped_with(("X-Session-ID", "X-Vllm-Priority"))


async def open_upstream(
    pool: UpstreamPool,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    first_byte_timeout_s: float,
    connect_timeout_s: float,
    method: str = "POST",
) -> UpstreamAnswer:
    """Sends the request (a POST unless `method` says otherwise) and returns once the replica's status and
    headers are in."""
    try:
        return await pool.request(url, body, headers, connect_timeout_s, method, first_byte_timeout_s)
    except ConnectFailed as e:
        raise UpstreamUnreachable(str(e)) from e
    except TimeoutError as late:  # one name per exception type: mypyc types it once
        raise UpstreamTimeout(f"no answer within first_byte_timeout_s ({first_byte_timeout_s:g} s)") from late


async def relay(
    downstream: Downstream,
    upstream: UpstreamAnswer,
    extra_headers: Mapping[str, str],
    on_first_byte: Callable[[], None],
    idle_timeout_s: float,
    collect_answer: bool = False,
    strip_usage: bool = False,
    max_answer_bytes: int | None = None,
    on_answer: Callable[[Relayed], None] | None = None,
    path: str = "",
    retry_cut: bool = False,
    dropped: frozenset[str] | None = None,
) -> Relayed:
    """Relays the replica's answer to the client; returns what happened.

    With `collect_answer`, `Relayed.answer` holds the assistant message the replica produced; with
    `strip_usage`, a stream's usage-only event is read but not forwarded. A whole answer over
    `max_answer_bytes` is not read further: the client gets a 502 (`too_large_error`). `on_answer` gets
    the outcome once the answer (and a Responses API answer's id) is read, before its last bytes go out (a
    client's next call may continue from it at once, at another worker). `path`: the call's route, whose
    shape the proxy's errors take (proxy/errors.py). `retry_cut`: a whole answer that breaks off, or a stream
    before its first whole event (whose head waits for it), raises WholeAnswerCut (nothing of it was sent)
    instead of answering the client's 502 or error event. `dropped`: the answer's
    fields not passed on, when not `forwarded_headers`' own (`HOP_BY_HOP` for the proxy's own app)."""
    headers = forwarded_headers(upstream.headers, extra_headers, dropped)
    outcome = Relayed(upstream.status)
    try:
        if upstream.content_type != "text/event-stream":
            await _relay_whole(
                downstream,
                upstream,
                headers,
                on_first_byte,
                idle_timeout_s,
                outcome,
                max_answer_bytes,
                on_answer,
                path,
                retry_cut,
            )
        else:
            limit = DEFAULT_COLLECT_LIMIT if max_answer_bytes is None else max_answer_bytes
            scanner = StreamScanner(collect_answer, limit, path)
            await _relay_stream(
                downstream,
                upstream,
                headers,
                on_first_byte,
                idle_timeout_s,
                outcome,
                scanner,
                strip_usage,
                on_answer,
                path,
                retry_cut,
            )
        return outcome
    finally:
        upstream.release() if upstream.at_eof else upstream.close()


async def _relay_whole(
    downstream: Downstream,
    upstream: UpstreamAnswer,
    headers: dict[str, str],
    on_first_byte: Callable[[], None],
    idle_timeout_s: float,
    outcome: Relayed,
    max_answer_bytes: int | None,
    on_answer: Callable[[Relayed], None] | None,
    path: str,
    retry_cut: bool,
) -> None:
    try:
        body = await upstream.read(idle_timeout_s=idle_timeout_s, max_bytes=max_answer_bytes)
    except AnswerTooLarge:
        outcome.too_large = True
        outcome.status = 502  # what the client gets, and is counted (counted as the replica's 200 before)
        answer_error(downstream, too_large_error(max_answer_bytes or 0), path)
        return
    except (BodyFailed, TimeoutError) as e:
        if retry_cut:
            raise WholeAnswerCut(repr(e)) from e
        cut_answer(downstream, outcome, repr(e), path)
        return
    on_first_byte()
    outcome.first_byte = True
    outcome.usage, outcome.answer = read_answer(body)
    outcome.response_id = whole_response_id(body, path)
    if on_answer is not None:
        on_answer(outcome)
    downstream.answer(upstream.status, headers, body)


async def _relay_stream(
    downstream: Downstream,
    upstream: UpstreamAnswer,
    headers: dict[str, str],
    on_first_byte: Callable[[], None],
    idle_timeout_s: float,
    outcome: Relayed,
    scanner: StreamScanner,
    strip_usage: bool,
    on_answer: Callable[[Relayed], None] | None,
    path: str,
    retry_cut: bool,
) -> None:
    # The head goes out with the first whole event: a replica that fails before one (its prefill: seconds
    # for an agent's prompt) has sent the client nothing, and the call may be asked of another replica.
    started = False
    held = b""
    while True:
        chunk = upstream.ready()  # all that arrived since the last write: one scan and one write for it
        if not chunk:
            if upstream.at_eof:
                break
            try:
                await upstream.more(idle_timeout_s)
            except (BodyFailed, TimeoutError) as e:
                stalled = isinstance(e, TimeoutError)
                if not started and retry_cut:
                    raise WholeAnswerCut("stalled" if stalled else repr(e)) from e
                outcome.upstream_error = "stalled" if stalled else repr(e)
                try:
                    if not started:
                        await downstream.start(upstream.status, headers)
                except ConnectionError:
                    outcome.client_gone = True
                    return
                await _end_with_error(downstream, path, stalled)
                return
            continue
        if not outcome.first_byte:
            on_first_byte()
            outcome.first_byte = True
        if strip_usage:  # the scanner passes whole events only
            chunk = scanner.feed_stripping_usage(chunk)
            if not chunk:
                continue
        else:
            scanner.feed(chunk)
            # an event's start goes out once whole, and never if the replica fails
            chunk, held = whole_events(held, chunk)
            if not chunk:
                continue
        try:
            if not started:
                started = True
                await downstream.start(upstream.status, headers)
            await downstream.write(chunk)
        except ConnectionError:
            outcome.client_gone = True
            return
    rest = scanner.flush() if strip_usage else held  # the answer ended: its last bytes as they came
    try:
        if not started:
            await downstream.start(upstream.status, headers)
        if rest:
            await downstream.write(rest)
    except ConnectionError:
        outcome.client_gone = True
        return
    outcome.usage = scanner.usage()
    outcome.answer = scanner.answer()
    outcome.response_id = scanner.response_id
    if on_answer is not None:
        on_answer(outcome)
    try:
        await downstream.end()
    except ConnectionError:
        outcome.client_gone = True


async def _end_with_error(downstream: Downstream, path: str, stalled: bool = False) -> None:
    """Ends a started stream with an error event in its route's shape. The chunked framing stays intact, so
    the client's keep-alive connection stays usable (closing it made the client's next call fail on a dead
    socket)."""
    try:
        await downstream.write(mid_answer_event(path, stalled, downstream.next_sequence_number()))
        await downstream.end()
    except ConnectionError:
        pass
