"""An unpaired UTF-16 surrogate escape in a call's body gets a 400 that says what it is (msgspec calls it
"Input data was truncated"), and the scan that finds one agrees with Python and msgspec on every string."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.calls import parse_call
from proxy.errors import ProxyError
from proxy.json_problems import unpaired_surrogate

# code points with the surrogates in: Python strings may hold them, UTF-8 may not
_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x1F9FF, exclude_categories=()), max_size=12)
_PIECES = st.lists(st.one_of(_TEXT, st.sampled_from(["\ud83d", "\ude00", "\\", "\\u", "\ud83d\ude00"])))


def _pairs_up(text: str) -> bool:
    """Whether the text's surrogates pair up as UTF-16 (as its JSON escapes then mean whole characters)."""
    try:
        text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        return False
    return True


@given(_PIECES)
def test_the_scan_finds_an_unpaired_surrogate_exactly_when_the_text_has_one(pieces: list[str]) -> None:
    text = "".join(pieces)
    body = json.dumps({"content": text}).encode()  # ASCII: every surrogate as a \\uXXXX escape
    found = unpaired_surrogate(body)
    assert (found is None) == _pairs_up(text)
    try:
        msgspec.json.decode(body)
        decoded = True
    except msgspec.DecodeError:
        decoded = False
    assert decoded == (found is None)
    if found is not None:
        assert body[found : found + 3].lower() == b"\\ud"


@pytest.mark.parametrize(
    "content",
    ['"cut \\ud83d"', '"\\ude00 alone"', '"pair \\ud83d\\ude00 then \\ud83d"'],
)
def test_a_call_with_an_unpaired_surrogate_is_a_clear_400(content: str) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": %s}]}' % content.encode()
    with pytest.raises(ProxyError) as refused:
        parse_call(body)
    assert refused.value.status == 400
    assert "unpaired UTF-16 surrogate" in str(refused.value)
    assert "truncated" not in str(refused.value)


def test_a_paired_surrogate_and_an_escaped_backslash_are_no_problem() -> None:
    parse_call(b'{"model": "m", "messages": [{"role": "user", "content": "\\ud83d\\ude00 \\\\ud800"}]}')


def test_the_scan_s_work_is_bounded_whatever_the_body() -> None:
    """The error path is the client's to choose: past its bounds the scan gives up (msgspec's message
    stands) instead of working through every escape or backslash of a crafted body. (A first cut in Python
    over a regex took ~1.7 s for 16k backslashes, and the time grew with their square.)"""
    lone = b'\\ud83d"'
    assert unpaired_surrogate(b'"' + b"\\ud83d\\ude00" * 10 + lone) == 1 + 12 * 10
    assert unpaired_surrogate(b'"' + b"\\ud83d\\ude00" * 40_000 + lone) is None  # past 65,536 escapes
    assert unpaired_surrogate(b'"' + b"\\\\" * 20 + lone) == 41  # 20 escaped backslashes, then the escape
    assert unpaired_surrogate(b'"' + b"\\\\" * 20 + b"\\" + lone) is None  # 41 before: it is text
    assert unpaired_surrogate(b'"' + b"\\" * 200 + lone) is None  # a run too long to count
    assert unpaired_surrogate(b'"' + b"x" * (17 << 20) + lone) is None  # past 16 MiB


def test_a_pair_the_bound_cuts_in_two_is_not_called_unpaired() -> None:
    """The 65,536th place the scan looks at is a high surrogate whose low half comes just after the bound:
    the body holds no unpaired escape, so the scan must not name one (it named the high half before)."""
    body = b'"\\ud000' + b"\\ud83d\\ude00" * 32768 + b'"'  # one non-surrogate `\ud`, then 32,768 pairs
    assert unpaired_surrogate(body) is None
    assert unpaired_surrogate(b'"\\ud83d' + b"\\ud83d\\ude00" * 40_000 + b'"') == 1  # found before the bound


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_nan_or_infinity_literal_is_named_as_such(literal: bytes) -> None:
    """The thirteenth review: Python's `json.dumps` writes `Infinity` for `float("inf")` (in a tool schema's
    `maximum`, say) and vLLM reads it; the proxy's 400 said only "invalid character"."""
    body = b'{"model":"m","messages":[],"tools":[{"maximum":' + literal + b"}]}"
    with pytest.raises(ProxyError) as refused:
        parse_call(body)
    assert refused.value.status == 400
    assert f"NaN or Infinity literal at byte {body.index(literal)}" in refused.value.message
