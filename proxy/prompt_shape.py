"""What the proxy can tell about a prompt without tokenizing it: its rough length and its prefix chunks.

Contract: `prefix_hashes(raw)` returns one chain hash per full chunk of `4 x PREFIX_CHUNK_TOKENS` bytes of the
raw JSON of the prompt (`messages` or `prompt`), each hash covering every byte before it (stable within one
process only: Python's seeded hash), so two calls of a conversation that grew by appending messages share
their leading hashes. JSON bytes stand in for tokens (about four bytes a token): good enough for an
approximate prefix index, which is all a router without the replica's tokenizer can have.

`agent_signature(messages, tools, instructions)` names an agent type for a call that sent no `X-Agent-Type`:
`auto-` and a hash of the head of its system prompt (the first message when its role is `system` or
`developer`, or the Responses API's `instructions`) and its `tools` array, or None when it has neither. Cheap
and bounded whatever the conversation's length or shape: only the first `SIGNATURE_SCAN_BYTES` of the
messages are read (from string to string with `bytes.find`, nothing past them decoded: a first message of
millions of tiny values costs no more than a short one); a first message that closes within them is decoded
whole, a longer one (a long system prompt) is read from its `role` and `content` members there (the same head
unless either is named, or named again, only past them). Only its first `SIGNATURE_SYSTEM_BYTES` bytes of
content are hashed (agents put per-task context such as the date or working directory late in the system
prompt, so the head names the agent), and the tools array's raw bytes (the agent's static tool definitions;
msgspec already sliced them out) are hashed up to `SIGNATURE_TOOLS_BYTES`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sized

import msgspec
from xxhash import xxh3_64_intdigest

from proxy.scheduler.types import PREFIX_CHUNK_BYTES

BYTES_PER_TOKEN = 4
CHUNK_BYTES = PREFIX_CHUNK_BYTES
Buffer = bytes | memoryview | msgspec.Raw
SIGNATURE_SYSTEM_BYTES = 2048
SIGNATURE_TOOLS_BYTES = 64 * 1024
SIGNATURE_SCAN_BYTES = 32 * 1024  # of the messages array, at most, looked at for its first (system) message
_OPENING_BYTES = 16 * 1024
SYSTEM_ROLES = frozenset({"system", "developer"})
_ARRAY_OF_OBJECTS = re.compile(rb"\s*\[\s*\{")
_SCALAR_STOPS = frozenset(b' \t\r\n,:[]{}"')


def estimated_tokens(raw: Sized) -> int:
    return len(raw) // BYTES_PER_TOKEN


def prefix_hashes(raw: Buffer, seed: int = 0) -> tuple[int, ...]:
    """`seed`: a salted tenant's (proxy/tenant_salt.py), whose prompts share no prefix with others'."""
    hashes: list[int] = []
    parent = seed
    view = memoryview(raw)  # chunks hashed in place, not copied out
    for start in range(0, len(view) - CHUNK_BYTES + 1, CHUNK_BYTES):
        # XXH3-64 of this chunk, seeded with the previous chunk's hash: 64 bits, faster than Python's own
        # hash of (parent, chunk) (which was ~4.5x faster than keyed BLAKE2) over a coding agent's 462 kB
        # prompt (~130 against ~220 µs; `python -m loadtests.bench.prompt_cost`). Nothing compares these
        # across processes: the index is local to this one.
        parent = xxh3_64_intdigest(view[start : start + CHUNK_BYTES], parent)
        hashes.append(parent)
    return tuple(hashes)


def output_cap(*caps: Buffer) -> int:
    """The first of `caps` (a body's `max_tokens` and its other names, as sent) that is a positive JSON
    integer of at most 9 digits, else 0: anything else (null, a float, a string, absent) is the replica's to
    judge, and says nothing here."""
    for raw in caps:
        if raw:
            text = bytes(raw)
            if text.isdigit() and len(text) <= 9 and text[0] != 48:  # (48: "0", or a leading zero)
                return int(text)
    return 0


# an integer as pydantic's lax mode reads one from a string (stripped): a sign, digits grouped by single
# underscores, a fraction of zeros ("2." is refused)
_INT_TEXT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?", re.ASCII)
# vLLM's VLLM_MAX_N_SEQUENCES default: the most choices a call may ask for (past it vLLM refuses the call)
MAX_CHOICES = 16384


def choice_count(raw: Buffer) -> int:
    """The choices a body's `n` (as sent) asks for, read as vLLM's request models read it (pydantic's lax
    mode: `2`, `"2"`, `" +2 "`, `"0_2"`, `2.0`, `"2.0"`, `1e1`); 1 for anything else (absent, null, out of
    range: the replica's to judge, and refuse)."""
    if not raw:
        return 1
    text = bytes(raw)
    if text.isdigit() and len(text) <= 5:  # (the usual form: no decode)
        count = int(text)
    else:
        try:
            value = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return 1
        if isinstance(value, str):  # "3", " +3 ", "0_3", "3.0" (ASCII digits: "²" is one to `isdigit`)
            stripped = value.strip()
            matched = len(stripped) <= 32 and _INT_TEXT.fullmatch(stripped) is not None
            count = int(stripped.partition(".")[0]) if matched else 0
        elif isinstance(value, float) and value.is_integer() and 1.0 <= value <= MAX_CHOICES:
            count = int(value)
        else:
            count = 0
    return count if 1 <= count <= MAX_CHOICES else 1


class _Opening(msgspec.Struct):
    role: str = ""
    content: msgspec.Raw = msgspec.Raw(b"")


_opening_decoder = msgspec.json.Decoder(_Opening)


def first_array_element(raw: Buffer) -> bytes | None:
    """The raw bytes of the first element of a JSON array of objects, found without decoding the rest; None
    when `raw` is not such an array (or its first element never closes). Work and copies grow with the first
    element (unbounded: `system_prompt_head` reads a bounded prefix instead): windows of the buffer,
    quadrupling, are scanned with `bytes.find` from string to string."""
    view = memoryview(raw)
    window = 16 * 1024
    while True:
        buf = bytes(view[:window])
        start = _first_object(buf)
        if start < 0:
            return None
        end = _object_end(buf, start)
        if end >= 0:
            return buf[start:end]
        if window >= len(view):
            return None
        window *= 4


def _first_object(buf: bytes) -> int:
    """The index of the `{` opening the first element of the array `buf` starts, or -1. The opening must lie
    in the first `_OPENING_BYTES` (whitespace before the array or its first object is not skipped forever)."""
    opening = _ARRAY_OF_OBJECTS.match(buf, 0, _OPENING_BYTES)
    return -1 if opening is None else opening.end() - 1


def _object_end(buf: bytes, start: int) -> int:
    """The index after the JSON value opening at `buf[start]` (a bracket), or -1 if `buf` ends first."""
    depth = 0
    pos = start
    while True:
        quote = buf.find(b'"', pos)
        for i in range(pos, len(buf) if quote < 0 else quote):  # structure: a few bytes
            ch = buf[i]
            if ch == 0x5B or ch == 0x7B:  # [ {
                depth += 1
            elif ch == 0x5D or ch == 0x7D:  # ] }
                depth -= 1
                if depth == 0:
                    return i + 1
        if quote < 0:
            return -1
        pos = _string_end(buf, quote)
        if pos < 0:
            return -1


def _string_end(buf: bytes, quote: int) -> int:
    """The index after the JSON string opening at `buf[quote]`, or -1 if `buf` ends first."""
    close = buf.find(b'"', quote + 1)
    while close >= 0 and buf[close - 1] == 0x5C and _escaped(buf, close):
        close = buf.find(b'"', close + 1)
    return close + 1 if close >= 0 else -1


def _escaped(buf: bytes, i: int) -> bool:
    """Whether the quote at `buf[i]` is escaped (an odd run of backslashes before it)."""
    k = i - 1
    while buf[k] == 0x5C:
        k -= 1
    return (i - 1 - k) % 2 == 1


def _value_end(buf: bytes, pos: int) -> int:
    """The index after the JSON value starting at `buf[pos]`, or -1 if `buf` ends first (or may: a number)."""
    ch = buf[pos]
    if ch == 0x22:
        return _string_end(buf, pos)
    if ch == 0x5B or ch == 0x7B:
        return _object_end(buf, pos)
    end = pos
    while end < len(buf) and buf[end] not in _SCALAR_STOPS:  # a number, true, false or null
        end += 1
    return end if end < len(buf) else -1


def _skip_space(buf: bytes, pos: int) -> int:
    while pos < len(buf):
        ch = buf[pos]
        if ch != 0x20 and ch != 0x0A and ch != 0x0D and ch != 0x09:
            break
        pos += 1
    return pos


def system_prompt_head(messages: Buffer) -> bytes:
    """The first `SIGNATURE_SYSTEM_BYTES` bytes of the raw content of the conversation's first message when it
    is a system (or developer) message, else b"". Reads at most the first `SIGNATURE_SCAN_BYTES` of `messages`
    (and the content's head where it starts near their end): a first message that closes within them is
    decoded whole, as it always was; a longer one (a long system prompt) is read from its members there."""
    view = memoryview(messages)
    buf = bytes(view[:SIGNATURE_SCAN_BYTES])
    start = _first_object(buf)
    if start < 0:
        return b""
    end, role, content_at = _members(buf, start)
    if end == _INVALID:
        end = _object_end(buf, start)  # the decoder refuses what it finds, or not: as before
        if end < 0:
            return b""
    if end >= 0:
        return _message_head(buf[start:end])
    if end == _UNKNOWN or len(view) <= len(buf) or content_at < 0 or not _names_a_system_role(role):
        return b""  # (a message that never closes was never decoded)
    tail = bytes(view[content_at : content_at + SIGNATURE_SYSTEM_BYTES + 1])
    end = _value_end(tail, 0)
    return tail[: SIGNATURE_SYSTEM_BYTES if end < 0 else min(end, SIGNATURE_SYSTEM_BYTES)]


def _message_head(first: bytes) -> bytes:
    try:
        opening = _opening_decoder.decode(first)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return b""
    if opening.role not in SYSTEM_ROLES:
        return b""
    return bytes(memoryview(opening.content)[:SIGNATURE_SYSTEM_BYTES])


_PAST = -1  # the object runs past the buffer
_INVALID = -2  # not a JSON object (as far as the buffer goes)
_UNKNOWN = -3  # the value of a `role` or `content` member starts or runs past the buffer


def _members(buf: bytes, start: int) -> tuple[int, bytes, int]:
    """Walks the members of the JSON object opening at `buf[start]`: (the index after it, or `_PAST`,
    `_INVALID` or `_UNKNOWN`; the raw value of its last `role` member within `buf`, b"" for none; the index of
    the value of its last `content` member there, -1 for none). Where the object closes within `buf`, it does
    where `_object_end` says (strings and brackets are read the same way). Where it does not, the last role
    and content within `buf` are the decoder's (the last of a repeated member wins) unless either is named
    again, or named only, past `buf`: there, and on JSON invalid past `buf` (or in a value within it), a long
    first message's head differs from decoding it whole."""
    role = b""
    content_at = -1
    pos = start + 1
    while True:
        pos = _skip_space(buf, pos)
        if pos >= len(buf):
            return _PAST, role, content_at
        if buf[pos] == 0x7D:
            # (after a `,` too: where _object_end ends it, the decoder refuses)
            return pos + 1, role, content_at
        if buf[pos] != 0x22:
            return _INVALID, role, content_at
        name_end = _string_end(buf, pos)
        if name_end < 0:
            return _PAST, role, content_at
        name = buf[pos:name_end]
        if 0x5C in name:  # escaped: as the decoder reads it
            try:
                name = msgspec.json.encode(msgspec.json.decode(name, type=str))
            except msgspec.DecodeError:
                return _INVALID, role, content_at
        pos = _skip_space(buf, name_end)
        if pos >= len(buf):
            return _PAST, role, content_at
        if buf[pos] != 0x3A:
            return _INVALID, role, content_at
        pos = _skip_space(buf, pos + 1)
        is_role = name == b'"role"'
        is_content = name == b'"content"'
        if pos >= len(buf):
            return (_UNKNOWN if is_role or is_content else _PAST), role, content_at
        end = _value_end(buf, pos)
        if end == pos:
            return _INVALID, role, content_at  # no value
        if is_role:
            if end < 0:
                return _UNKNOWN, role, content_at
            role = buf[pos:end]
        elif is_content:
            content_at = pos
        if end < 0:
            return _PAST, role, content_at
        pos = _skip_space(buf, end)
        if pos >= len(buf):
            return _PAST, role, content_at
        if buf[pos] == 0x7D:
            return pos + 1, role, content_at
        if buf[pos] != 0x2C:
            return _INVALID, role, content_at
        pos += 1


def _names_a_system_role(raw: bytes) -> bool:
    """Whether the raw JSON value `raw` is a string in `SYSTEM_ROLES` (b"": no role)."""
    if raw in (b'"system"', b'"developer"'):
        return True
    if not raw.startswith(b'"') or 0x5C not in raw:
        # not a string (the decoder refuses it), or one spelled without escapes: not a system role
        return False
    try:
        return msgspec.json.decode(raw, type=str) in SYSTEM_ROLES
    except msgspec.DecodeError:
        return False


def agent_signature(messages: Buffer, tools: Buffer, instructions: Buffer = b"") -> str | None:
    """`auto-<hash>` of the head of the system prompt and the tool definitions; None without either."""
    system = system_prompt_head(messages) if len(memoryview(messages)) else b""
    if not system:
        system = bytes(memoryview(instructions)[:SIGNATURE_SYSTEM_BYTES])
    tool_view = memoryview(tools)[:SIGNATURE_TOOLS_BYTES]
    if len(tool_view) <= 16 and bytes(tool_view).translate(None, b" \t\r\n") in (b"null", b"[]", b""):
        tool_view = memoryview(b"")
    if not system and not len(tool_view):
        return None
    h = hashlib.sha256()  # about twice blake2b's speed here (SHA extensions)
    h.update(len(system).to_bytes(4, "big"))
    h.update(system)
    h.update(tool_view)
    return f"auto-{h.hexdigest()[:16]}"
