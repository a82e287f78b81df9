"""The forwarding data path: the client's bytes to a replica, the replica's bytes back, unchanged.

Kept behind this one small module so it can move to a lower-level transport if the overhead benchmark asks for
it. Nothing here decides anything: it opens the upstream call, relays the answer (streamed as it arrives for
SSE, whole otherwise) and reads the token usage from the answer's tail for the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import aiohttp
import msgspec
from aiohttp import web

from proxy.scheduler.types import Usage

# Hop-by-hop headers (RFC 9110 7.6.1) and those aiohttp recomputes for the new connection.
_NOT_FORWARDED = frozenset(
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
    }
)
# Enough of a stream's end to hold the final usage chunk and [DONE].
_TAIL_BYTES = 16384


class UpstreamUnreachable(Exception):
    """The replica could not be reached, or closed before answering: safe to try another replica."""


class _Details(msgspec.Struct):
    cached_tokens: int | None = 0


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: _Details | None = None


class _WithUsage(msgspec.Struct):
    usage: _Usage | None = None


_usage_decoder = msgspec.json.Decoder(_WithUsage)


def forwarded_headers(headers: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    out = {k: v for k, v in headers.items() if k.lower() not in _NOT_FORWARDED}
    out.update(extra)
    return out


def parse_usage(payload: bytes) -> Usage | None:
    """Usage from a JSON answer, or from the last SSE event that carries one; None when there is none."""
    if payload.lstrip().startswith(b"{"):
        return _decode_usage(payload)
    for line in reversed(payload.split(b"\n")):
        if line.startswith(b"data:") and b'"usage"' in line:
            usage = _decode_usage(line[5:])
            if usage is not None:
                return usage
    return None


def _decode_usage(raw: bytes) -> Usage | None:
    try:
        usage = _usage_decoder.decode(raw).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if usage is None:
        return None
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return Usage(usage.prompt_tokens, usage.completion_tokens or 0, cached or 0)


async def open_upstream(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str]
) -> aiohttp.ClientResponse:
    """POSTs and returns once the replica's status and headers are in; raises UpstreamUnreachable."""
    try:
        return await session.post(url, data=body, headers=headers)
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as e:
        raise UpstreamUnreachable(f"{url}: {e!r}") from e


async def relay(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    extra_headers: Mapping[str, str],
    on_first_byte: Callable[[], None],
) -> tuple[web.StreamResponse, Usage | None]:
    """Relays the replica's answer to the client; returns what was sent and the usage it reported.

    A client that goes away mid-stream closes the upstream connection, which makes the replica abort the call.
    """
    headers = forwarded_headers(upstream.headers, extra_headers)
    try:
        if upstream.content_type != "text/event-stream":
            body = await upstream.read()
            on_first_byte()
            return web.Response(status=upstream.status, body=body, headers=headers), parse_usage(body)
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        tail = b""
        first = True
        async for chunk in upstream.content.iter_any():
            if first:
                on_first_byte()
                first = False
            await response.write(chunk)
            tail = (tail + chunk)[-_TAIL_BYTES:]
        await response.write_eof()
        return response, parse_usage(tail)
    finally:
        upstream.release() if upstream.content.at_eof() else upstream.close()
