"""Property tests (hypothesis) for every parser of untrusted data in the proxy (issue 16): request bodies,
identity headers and body ids, the SSE and JSON answers of replicas, and the configuration. Whatever the
input, each parser returns a result or raises its one documented error, never anything else."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.calls import parse_call
from proxy.config import ProxyConfig
from proxy.errors import ProxyError
from proxy.identity import MAX_ID_CHARS, CallFields, IdentityError, check_id, identify
from proxy.scheduler.registry import ConfigError
from proxy.serve_options import build_config
from proxy.session_chain import PrefixChains, conversation_chain
from proxy.sse_scan import StreamScanner, parse_usage, read_answer

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID_ID = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
call_like = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values,
        "stream": json_values,
        "stream_options": json_values,
        "session_id": json_values,
        "prompt_cache_key": json_values,
        "vllm_xargs": json_values,
        "messages": json_values,
        "prompt": json_values,
        "input": json_values,
        "previous_response_id": json_values,
    },
)


def parsed_or_400(body: bytes) -> CallFields | None:
    try:
        return parse_call(body)
    except ProxyError as e:
        assert e.status == 400 and e.message
        return None


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes_as_a_body_parse_or_are_a_400(body: bytes) -> None:
    parsed_or_400(body)


@SETTINGS
@given(call_like)
def test_json_bodies_with_any_field_types_parse_or_are_a_400(body: dict[str, Any]) -> None:
    fields = parsed_or_400(json.dumps(body).encode())
    if fields is not None:  # what was accepted has the documented types
        # null model: the replica's default, as vLLM reads it; null stream: not streamed
        assert isinstance(fields.model, str | None) and isinstance(fields.stream, bool | None)


@pytest.mark.parametrize("depth", [10, 1000, 100_000])
def test_deep_nesting_is_a_400_or_parses(depth: int) -> None:
    for inner in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        parsed_or_400(b'{"messages": ' + inner + b"}")
        parsed_or_400(b'{"vllm_xargs": {"x": ' + inner + b"}}")
        parsed_or_400(b'{"prompt_cache_key": ' + inner + b"}")  # (any shape: a session only if a string)


def identity_or_error(headers: dict[str, str], fields: CallFields) -> None:
    try:
        who = identify(CIMultiDict(headers), fields, "r-1", chains=PrefixChains())
    except IdentityError as e:
        assert e.param and e.message
        for value in headers.values():  # the refused value is never quoted back
            if len(value) > 3:
                assert value not in e.message
        return
    for value in (who.session_id, who.tenant_id, who.agent_type):
        assert VALID_ID.fullmatch(value) and len(value) <= MAX_ID_CHARS + 64


header_names = st.sampled_from(
    ["X-Session-ID", "session-id", "x-claude-code-session-id", "X-Tenant-ID", "X-Agent-Type", "Authorization"]
)


@SETTINGS
@given(st.dictionaries(header_names, st.text(max_size=300), max_size=4), call_like)
def test_identity_from_any_headers_and_body_is_valid_or_refused(
    headers: dict[str, str], body: dict[str, Any]
) -> None:
    fields = parsed_or_400(json.dumps(body).encode())
    if fields is not None:
        identity_or_error(headers, fields)


@SETTINGS
@given(st.text(max_size=400))
def test_check_id_accepts_exactly_short_printable_ascii(value: str) -> None:
    ok = 0 < len(value) <= MAX_ID_CHARS and VALID_ID.fullmatch(value) is not None
    try:
        assert check_id("x", value) == value and ok
    except IdentityError:
        assert not ok


@SETTINGS
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_message_lists_of_any_shape_chain_or_are_ignored(raw: bytes) -> None:
    result = conversation_chain(raw)
    if result is not None:
        chain, assistants = result
        assert all(0 <= i < len(chain) for i in assistants)


sse_events = st.lists(
    st.one_of(
        json_values.map(lambda v: b"data: " + json.dumps(v).encode()),
        st.just(b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'),
        st.just(b'data: {"choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}]}'),
        st.just(b"data: [DONE]"),
        st.binary(max_size=40),
    ),
    max_size=8,
)


@SETTINGS
@given(sse_events, st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_sse_scanner_takes_any_stream_cut_anywhere(events: list[bytes], cuts: list[int]) -> None:
    stream = b"\n\n".join(events) + b"\n\n"
    whole = StreamScanner(collect_answer=True)
    whole.feed(stream)
    pieces, last = [], 0
    for cut in sorted(c for c in cuts if c <= len(stream)):
        pieces.append(stream[last:cut])
        last = cut
    pieces.append(stream[last:])
    split = StreamScanner(collect_answer=True)
    stripping = StreamScanner()
    forwarded = b""
    for piece in pieces:
        split.feed(piece)
        forwarded += stripping.feed_stripping_usage(piece)
    forwarded += stripping.flush()
    # How the replica's bytes were cut into chunks changes nothing the proxy concludes.
    assert split.usage() == whole.usage() and split.answer() == whole.answer()
    assert len(forwarded) <= len(stream)


@SETTINGS
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_whole_answers_of_any_shape_are_read_or_ignored(body: bytes) -> None:
    read_answer(body)
    parse_usage(body)


config_keys = st.sampled_from([f.name for f in msgspec.structs.fields(ProxyConfig)])

config_values = (
    json_values
    | st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, "nan", "inf", "-1", "abc", "", [], {}])
    | st.text(max_size=10)
)


@SETTINGS
@given(st.dictionaries(config_keys | st.text(min_size=1, max_size=12), config_values, max_size=4))
def test_any_configuration_builds_or_is_a_config_error(data: dict[str, Any]) -> None:
    data = {"replicas": ["http://127.0.0.1:1"], **data}
    try:
        config = build_config(data)
    except ConfigError as e:
        assert str(e)
        return
    for field in msgspec.structs.fields(config):  # nothing non-finite got through
        value = getattr(config, field.name)
        if isinstance(value, float):
            assert math.isfinite(value), field.name


@pytest.mark.parametrize(
    "key", ["health_interval_s", "first_byte_timeout_s", "stream_idle_timeout_s", "retry_after_s"]
)
@pytest.mark.parametrize("value", [math.nan, math.inf, "nan", "inf"])
def test_non_finite_numbers_are_a_config_error_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        build_config({"replicas": ["http://127.0.0.1:1"], key: value})


def test_an_unknown_key_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="helth_interval_s"):
        build_config({"replicas": ["http://127.0.0.1:1"], "helth_interval_s": 1})


def test_a_wrong_type_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="max_retries"):
        build_config({"replicas": ["http://127.0.0.1:1"], "max_retries": "lots"})
