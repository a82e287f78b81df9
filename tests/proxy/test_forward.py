"""Usage parsing from whole and streamed answers, and header filtering."""

from __future__ import annotations

from proxy.forward import forwarded_headers
from proxy.scheduler import Usage
from proxy.sse_scan import parse_usage

USAGE = b'"usage":{"prompt_tokens":100,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":64}}'


def test_usage_from_a_json_answer() -> None:
    assert parse_usage(b'{"id":"x","choices":[],' + USAGE + b"}") == Usage(100, 7, 64)


def test_usage_from_the_last_sse_event_that_has_one() -> None:
    stream = (
        b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}\n\n'
        b'data: {"choices":[],' + USAGE + b"}\n\n"
        b"data: [DONE]\n\n"
    )
    assert parse_usage(stream) == Usage(100, 7, 64)


def test_no_usage_gives_none() -> None:
    assert parse_usage(b'data: {"choices":[]}\n\ndata: [DONE]\n\n') is None
    assert parse_usage(b'{"choices":[]}') is None
    assert parse_usage(b"not json") is None


def test_usage_without_details_counts_no_cached_tokens() -> None:
    assert parse_usage(b'{"usage":{"prompt_tokens":5,"completion_tokens":1}}') == Usage(5, 1, 0)


def test_hop_by_hop_headers_are_dropped_and_extras_added() -> None:
    out = forwarded_headers(
        {"Host": "a", "Connection": "keep-alive", "Content-Length": "3", "Authorization": "Bearer k"},
        {"X-Session-ID": "s"},
    )
    assert out == {"Authorization": "Bearer k", "X-Session-ID": "s"}


def test_headers_the_proxy_sets_replace_the_clients_whatever_their_case() -> None:
    out = forwarded_headers(
        {"x-session-id": "client", "Expect": "100-continue", "Accept": "*/*"}, {"X-Session-ID": "s"}
    )
    assert out == {"Accept": "*/*", "X-Session-ID": "s"}
