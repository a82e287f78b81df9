"""Prefix chunk hashes of raw prompts, and the body rewrite that carries a retention directive."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.directives import asking_for_usage, lacks_of, with_retention, with_session_id
from proxy.identity import decode_call
from proxy.prompt_shape import CHUNK_BYTES, MAX_CHOICES, choice_count, estimated_tokens, prefix_hashes


def messages(turns: int) -> list[dict[str, str]]:
    convo = [{"role": "system", "content": "You are an agent. " * 200}]
    for i in range(turns):
        convo.append({"role": "user", "content": f"step {i} " + "observation " * 150})
    return convo


def test_a_growing_conversation_keeps_its_leading_chunk_hashes() -> None:
    short = decode_call(msgspec.json.encode({"messages": messages(2)})).messages
    long = decode_call(msgspec.json.encode({"messages": messages(5), "stream": True})).messages
    a, b = prefix_hashes(bytes(short)), prefix_hashes(bytes(long))
    assert len(a) == len(short) // CHUNK_BYTES and len(b) > len(a) > 2
    # Every full chunk of the shorter rendering except the one holding its closing bracket is shared.
    assert b[: len(a) - 1] == a[: len(a) - 1]
    other = decode_call(msgspec.json.encode({"messages": [{"role": "system", "content": "x" * 5000}]}))
    assert prefix_hashes(bytes(other.messages))[0] != a[0]
    assert estimated_tokens(bytes(long)) == len(long) // 4


def test_completions_prompts_are_hashed_too_and_short_ones_have_no_chunk() -> None:
    fields = decode_call(b'{"prompt": "hello", "model": "m"}')
    assert bytes(fields.prompt) == b'"hello"' and prefix_hashes(bytes(fields.prompt)) == ()


def test_retention_rewrite_sets_the_directive_and_keeps_every_other_field() -> None:
    body = msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_p": 0.5})
    out = msgspec.json.decode(with_retention(body, "s-1", 12.5))
    assert out["vllm_xargs"] == {"saga_retain_ttl_s": 12.5, "session_id": "s-1"}
    assert {k: v for k, v in out.items() if k != "vllm_xargs"} == msgspec.json.decode(body)
    # A session id the client already put in vllm_xargs wins; its other xargs stay.
    body = msgspec.json.encode({"vllm_xargs": {"session_id": "mine", "foo": 1}})
    assert msgspec.json.decode(with_retention(body, "s-1", 3.0))["vllm_xargs"] == {
        "session_id": "mine",
        "foo": 1,
        "saga_retain_ttl_s": 3.0,
    }


def test_retention_rewrite_adds_the_retention_priority_only_when_given() -> None:
    body = msgspec.json.encode({"prompt": "x", "vllm_xargs": {"saga_retain_priority": 9}})
    assert msgspec.json.decode(with_retention(body, "s", 2.0, -4))["vllm_xargs"] == {
        "saga_retain_priority": -4,
        "saga_retain_ttl_s": 2.0,
        "session_id": "s",
    }
    body = msgspec.json.encode({"prompt": "x"})
    assert "saga_retain_priority" not in msgspec.json.decode(with_retention(body, "s", 2.0))["vllm_xargs"]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from(["model", "messages", "vllm_xargs", "stream_options", "stream", "x\u00e9"])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(_keys | st.text(max_size=6), _json_values, max_size=5),
    st.booleans(),
    st.sampled_from([b"", b" ", b"\n\t"]),
    st.booleans(),
    st.sampled_from([b"", b" ", b"\r\n"]),
)
def test_rewrites_without_decoding_give_what_decoding_would(
    call: dict[str, object], ascii_only: bool, space: bytes, escaped_keys: bool, trailing: bytes
) -> None:
    """Whatever the body (keys that are there, or spelled with \\u escapes, unicode, empty objects, leading
    whitespace), the replica sees exactly the object that decoding, setting the field and re-encoding gives,
    though the usage request is spliced in without decoding where that is safe (a `\\u0073tream_options`
    key or an empty object once gave a duplicate key or a trailing comma)."""
    body = space + json.dumps(call, ensure_ascii=ascii_only).encode() + trailing
    if escaped_keys:  # the same keys spelled with an escape, which a byte search does not see
        body = body.replace(b'"vllm_xargs"', b'"vllm\\u005fxargs"').replace(
            b'"stream_options"', b'"\\u0073tream_options"'
        )
    reference = json.loads(body)
    xargs = reference.get("vllm_xargs")
    xargs = dict(xargs) if isinstance(xargs, dict) else {}
    xargs["saga_retain_ttl_s"] = 2.5
    xargs["saga_retain_priority"] = 3
    xargs.setdefault("session_id", "s\n\u00e9")
    assert json.loads(with_retention(body, "s\n\u00e9", 2.5, 3)) == {**reference, "vllm_xargs": xargs}
    options = reference.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    options["include_usage"] = True
    assert json.loads(asking_for_usage(body)) == {**reference, "stream_options": options}
    # Where the call's decode says the body lacks the member (as the proxy decides: `lacks_of`), it is added
    # without decoding the body, and the replica sees the same object.
    try:
        lacks = lacks_of(decode_call(body))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return  # not a call the proxy would forward (a 400 before any rewrite)
    assert lacks.vllm_xargs == ("vllm_xargs" not in reference)
    assert lacks.stream_options == ("stream_options" not in reference)
    spliced = with_retention(body, "s\n\u00e9", 2.5, 3, lacks.vllm_xargs)
    assert json.loads(spliced) == {**reference, "vllm_xargs": xargs}
    usage_asked = asking_for_usage(body, lacks.stream_options)
    assert json.loads(usage_asked) == {**reference, "stream_options": options}
    both = with_retention(asking_for_usage(body, lacks.stream_options), "s", 1.0, None, lacks.vllm_xargs)
    assert json.loads(both)["stream_options"] == options and json.loads(both)["vllm_xargs"]["session_id"]


def test_the_session_id_rewrite_sets_it_and_keeps_every_other_field_as_sent() -> None:
    body = b'{"model":"m","session_id":"x","messages":[{"role":"user","content":"caf\\u00e9 1.50"}],"n":1}'
    sent = with_session_id(body, "alpha:x")
    assert json.loads(sent)["session_id"] == "alpha:x"
    assert b'"content":"caf\\u00e9 1.50"' in sent  # other values as the client wrote them
    assert {k: v for k, v in json.loads(sent).items() if k != "session_id"} == {
        k: v for k, v in json.loads(body).items() if k != "session_id"
    }


@pytest.mark.parametrize(
    ("raw", "count"),
    [
        (b"", 1),
        (b"3", 3),
        (b'"3"', 3),
        (b'" 3 "', 3),
        (b"3.0", 3),
        (b'"3.0"', 3),
        (b'"1e1"', 1),  # (pydantic reads a string's float notation no further)
        # the second review: forms vLLM serves that were read as one choice
        (b'"+2"', 2),
        (b'" +3 "', 3),
        (b'"+2.0"', 2),
        (b'"000003"', 3),
        (b'"00000000002"', 2),
        (b'"1_0"', 10),
        (b'"0_3"', 3),
        (b'"2."', 1),  # vLLM refuses these
        (b'"_3"', 1),
        (b'"1__0"', 1),
        (b'"-2"', 1),
        (b'"' + b"1" * 5000 + b'"', 1),  # (past Python's digits for `int`: no error)
        (b"1e1", 10),
        (b"16384", 16384),
        (b"16385", 1),  # past vLLM's bound: the replica refuses it
        (b"0", 1),
        (b"-2", 1),
        (b"2.5", 1),
        (b"null", 1),
        (b"true", 1),
        (b"[2]", 1),
        (b'"\xc2\xb2"', 1),  # "²": a digit to `str.isdigit`, and no int
        (b'"\xd9\xa3"', 1),  # an Arabic-Indic 3
        (b"1e400", 1),
        (b"{", 1),
    ],
)
def test_the_choices_n_asks_for_are_read_as_vllm_reads_them(raw: bytes, count: int) -> None:
    assert choice_count(raw) == count


@given(st.one_of(st.binary(max_size=24), st.from_regex(rb'"[0-9\s.e+-]{0,8}"', fullmatch=True)))
def test_any_n_is_read_without_error_and_within_bounds(raw: bytes) -> None:
    assert 1 <= choice_count(raw) <= MAX_CHOICES
