"""The agent signature reads a bounded prefix of the messages, whatever the first message's length or shape,
and names every ordinary conversation as it did when it decoded the whole first message."""

from __future__ import annotations

import hashlib
import json
import re

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.prompt_shape import SIGNATURE_SCAN_BYTES, SIGNATURE_SYSTEM_BYTES, agent_signature

TOOLS = b'[{"type":"function","function":{"name":"bash","parameters":{"type":"object"}}}]'
MB = 1 << 20


# A first message far longer than the scanned prefix, its content (or its members) made of many tiny values:
# the old scan walked each of them in an interpreted loop (seconds for a few MB). Its bytes past
# SIGNATURE_SCAN_BYTES + SIGNATURE_SYSTEM_BYTES are garbage that never closes the message: a scan that read
# them would find no first message (no signature); one that stops early names the agent by the prefix alone.
@pytest.mark.parametrize(
    ("opening", "unit", "closed"),
    [
        (b'{"role":"system","content":[', b'"",', b'""]}'),  # the reviewer's: an array of empty strings
        (b'{"role":"system","content":[', b"1,", b"1]}"),
        (b'{"role":"system","content":[', b"[],", b"[]]}"),
        (b'{"role":"system","content":"', b'\\"', b'"}'),
        (b'{"role":"developer","content":"a"', b" ", b"}"),
        (b'{"role":"system","content":[{"type":"text","text":"a"}]', b',"":0', b"}"),
    ],
)
def test_a_huge_first_message_is_read_only_as_far_as_a_bounded_prefix(
    opening: bytes, unit: bytes, closed: bytes
) -> None:
    valid = opening + unit * ((SIGNATURE_SCAN_BYTES + SIGNATURE_SYSTEM_BYTES) // len(unit) + 1)
    huge = b"[" + valid + b"\x00garbage" * (2 * MB // 8)
    reference = b"[" + valid + closed + b', {"role": "user", "content": "hi"}]'
    expected = agent_signature(reference, b"")
    assert expected is not None and expected.startswith("auto-")
    assert agent_signature(huge, b"") == expected
    assert agent_signature(huge, TOOLS) == agent_signature(reference, TOOLS) != expected


def test_the_head_of_a_long_content_starting_near_the_prefix_end_is_read_past_it() -> None:
    # The content starts a few bytes before the end of the scanned prefix: its head is read on from there.
    filler = "f" * (SIGNATURE_SCAN_BYTES - 60)
    for content in ("c" * 10_000, "short", ["part"] * 3000):
        first = {"role": "system", "name": filler, "content": content, "x": "y" * SIGNATURE_SCAN_BYTES}
        raw = msgspec.json.encode([first, {"role": "user", "content": "hi"}])
        assert agent_signature(raw, b"") == _old_agent_signature(raw, b"")


def test_escaped_member_names_and_roles_of_a_long_first_message_read_as_the_decoder_reads_them() -> None:
    long = b'"' + b"x" * (2 * SIGNATURE_SCAN_BYTES) + b'"'
    for role_name, role, content_name, system in (
        (b'"r\\u006fle"', b'"sys\\u0074em"', b'"content"', True),
        (b'"role"', b'"developer"', b'"con\\u0074ent"', True),
        (b'"role"', b'"s\\u0079stem "', b'"content"', False),
        (b'"role"', b"null", b'"content"', False),
        (b'"r\\u006fle"', b'"system"', b'"content "', False),  # no content: the instructions count instead
    ):
        raw = b"[ {" + role_name + b" : " + role + b" , " + content_name + b" :\n" + long + b"} ]"
        assert _old_agent_signature(raw, b"") == agent_signature(raw, b"")
        assert (agent_signature(raw, b"") is not None) is system


def test_what_a_long_first_message_names_past_the_prefix_is_not_read() -> None:
    # The one difference from decoding it whole, for a first message longer than the prefix: a `role` (or
    # `content`) named again past it (the decoder's last one wins), or named only there (here after a content
    # longer than the prefix).
    for length, same in (
        (2 * SIGNATURE_SCAN_BYTES, False),
        (1000, True),
    ):  # shorter: decoded whole, as before
        content = b'"' + b"x" * length + b'"'
        system = b'[{"role":"system","content":' + content + b"}]"
        again = b'[{"role":"system","content":' + content + b',"role":"user"}]'
        late = b'[{"content":' + content + b',"role":"system"}]'
        assert _old_agent_signature(again, b"") is None and _old_agent_signature(late, b"") is not None
        assert (agent_signature(again, b"") is None) is same
        assert (agent_signature(again, b"") == agent_signature(system, b"")) is not same
        assert (agent_signature(late, b"") == _old_agent_signature(late, b"")) is same


# --- the signature is unchanged for ordinary conversations: against a copy of the code before the bound ---

_ARRAY_OF_OBJECTS = re.compile(rb"\s*\[\s*\{")


class _Opening(msgspec.Struct):
    role: str = ""
    content: msgspec.Raw = msgspec.Raw(b"")


def _old_first_array_element(raw: bytes) -> bytes | None:
    view = memoryview(raw)
    window = 16 * 1024
    while True:
        buf = bytes(view[:window])
        opening = _ARRAY_OF_OBJECTS.match(buf)
        if opening is None:
            return None
        start = opening.end() - 1
        end = _old_object_end(buf, start)
        if end is not None:
            return buf[start:end]
        if window >= len(view):
            return None
        window *= 4


def _old_object_end(buf: bytes, start: int) -> int | None:
    depth = 0
    pos = start
    while True:
        quote = buf.find(b'"', pos)
        for i, ch in enumerate(buf[pos : len(buf) if quote < 0 else quote]):
            if ch in b"[{":
                depth += 1
            elif ch in b"]}":
                depth -= 1
                if depth == 0:
                    return pos + i + 1
        if quote < 0:
            return None
        close = buf.find(b'"', quote + 1)
        while close >= 0 and _old_escaped(buf, close):
            close = buf.find(b'"', close + 1)
        if close < 0:
            return None
        pos = close + 1


def _old_escaped(buf: bytes, i: int) -> bool:
    k = i - 1
    while buf[k] == 0x5C:
        k -= 1
    return (i - 1 - k) % 2 == 1


def _old_agent_signature(messages: bytes, tools: bytes) -> str | None:
    system = b""
    first = _old_first_array_element(messages) if messages else None
    if first is not None:
        try:
            opening = msgspec.json.decode(first, type=_Opening)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            opening = _Opening()
        if opening.role in ("system", "developer"):
            system = bytes(opening.content)[:SIGNATURE_SYSTEM_BYTES]
    tool_view = tools[:65536]
    if len(tool_view) <= 16 and tool_view.translate(None, b" \t\r\n") in (b"null", b"[]", b""):
        tool_view = b""
    if not system and not tool_view:
        return None
    h = hashlib.sha256()
    h.update(len(system).to_bytes(4, "big"))
    h.update(system)
    h.update(tool_view)
    return f"auto-{h.hexdigest()[:16]}"


_piece = st.text(alphabet=st.sampled_from('ab "\\{}[]:,\n\u00e9\u4e2d\U0001f600'), max_size=40)


@st.composite
def _text(draw: st.DrawFn, longest: int) -> str:
    """Short, or long: a piece repeated past the scanned prefix, with a different head and tail."""
    head, piece, tail = draw(_piece), draw(_piece) or "p", draw(_piece)
    most = longest // len(piece)
    return head + piece * draw(st.sampled_from([0, 1, most // 4, most // 2, most])) + tail


_roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "System", "sys\u0074em"])
_extras = st.dictionaries(
    st.sampled_from(["name", "cache_control", "tool_calls", "tool_call_id", "x"]),
    st.none()
    | st.integers()
    | st.text(max_size=20)
    | st.just({"type": "ephemeral"})
    | st.just([{"id": "1"}]),
    max_size=3,
)


@st.composite
def _first_message(draw: st.DrawFn) -> dict[str, object]:
    role_first = draw(st.sampled_from([True, True, True, False]))
    # Ordinary clients name the role first; one that names the content first is ordinary too, with a content
    # shorter than the prefix (past it, the role would be named only past the prefix: see above).
    longest = 3 * SIGNATURE_SCAN_BYTES if role_first else SIGNATURE_SCAN_BYTES // 8
    content = draw(
        st.one_of(
            _text(longest),
            st.lists(
                st.fixed_dictionaries({"type": st.just("text"), "text": _text(longest // 2)}),
                min_size=1,
                max_size=3,
            ),
            st.none(),
        )
    )
    first: dict[str, object] = {}
    extras = draw(_extras)
    before = draw(st.booleans())
    if before:
        first.update(extras)
    if role_first:
        first["role"] = draw(_roles)
    if draw(st.sampled_from([True, True, True, False])) or not role_first:
        first["content"] = content
    if not role_first:
        first["role"] = draw(_roles)
    if not before:
        first.update(extras)
    return first


@settings(max_examples=250, deadline=None)
@given(
    _first_message(),
    st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": _piece}), max_size=3
    ),
    st.sampled_from(["msgspec", "spaced", "indented", "ascii"]),
    st.sampled_from([b"", TOOLS, b"[]"]),
)
def test_ordinary_conversations_keep_their_signature(
    first: dict[str, object], rest: list[dict[str, object]], style: str, tools: bytes
) -> None:
    messages = [first, *rest]
    if style == "msgspec":
        raw = msgspec.json.encode(messages)
    elif style == "spaced":
        raw = json.dumps(messages, ensure_ascii=False).encode()
    elif style == "indented":
        raw = json.dumps(messages, ensure_ascii=False, indent=2).encode()
    else:
        raw = json.dumps(messages, separators=(",", ":")).encode()  # non-ASCII escaped (\u00e9)
    assert agent_signature(raw, tools) == _old_agent_signature(raw, tools)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"", TOOLS]))
def test_any_short_bytes_keep_their_signature(raw: bytes, tools: bytes) -> None:
    # Shorter than the prefix, whatever they are (JSON or not): decoded whole, as before.
    for messages in (raw, b"[" + raw, b'[{"role":"system","content":' + raw):
        assert agent_signature(messages, tools) == _old_agent_signature(messages, tools)
