"""What the proxy can tell about a prompt without tokenizing it: its rough length and its prefix chunks.

Contract: `prefix_hashes(raw)` returns one chain hash per full chunk of `4 x PREFIX_CHUNK_TOKENS` bytes of the
raw JSON of the prompt (`messages` or `prompt`), each hash covering every byte before it (stable within one
process only: Python's seeded hash), so two calls of a conversation that grew by appending messages share
their leading hashes. JSON bytes stand in for tokens (about four bytes a token): good enough for an
approximate prefix index, which is all a router without the replica's tokenizer can have.

`agent_signature(messages, tools, instructions)` names an agent type for a call that sent no `X-Agent-Type`:
`auto-` and a hash of the head of its system prompt (the first message when its role is `system` or
`developer`, or the Responses API's `instructions`) and its `tools` array, or None when it has neither. Cheap
and bounded whatever the conversation's length: only the first message is scanned (a C-speed regex over its
strings and brackets, no decode of the rest), only its first `SIGNATURE_SYSTEM_BYTES` bytes of content are
hashed (agents put per-task context such as the date or working directory late in the system prompt, so the
head names the agent), and the tools array's raw bytes (the agent's static tool definitions; msgspec already
sliced them out) are hashed up to `SIGNATURE_TOOLS_BYTES`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sized

import msgspec
from xxhash import xxh3_64_intdigest

from proxy.scheduler.types import PREFIX_CHUNK_TOKENS

BYTES_PER_TOKEN = 4
CHUNK_BYTES = BYTES_PER_TOKEN * PREFIX_CHUNK_TOKENS
Buffer = bytes | memoryview | msgspec.Raw
SIGNATURE_SYSTEM_BYTES = 2048
SIGNATURE_TOOLS_BYTES = 64 * 1024
SYSTEM_ROLES = frozenset({"system", "developer"})
_ARRAY_OF_OBJECTS = re.compile(rb"\s*\[\s*\{")
_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")


def estimated_tokens(raw: Sized) -> int:
    return len(raw) // BYTES_PER_TOKEN


def prefix_hashes(raw: Buffer) -> tuple[int, ...]:
    hashes: list[int] = []
    parent = 0
    view = memoryview(raw)  # chunks hashed in place, not copied out
    for start in range(0, len(view) - CHUNK_BYTES + 1, CHUNK_BYTES):
        # XXH3-64 of this chunk, seeded with the previous chunk's hash: 64 bits, faster than Python's own
        # hash of (parent, chunk) (which was ~4.5x faster than keyed BLAKE2) over a coding agent's 462 kB
        # prompt (~130 against ~220 µs; `python -m loadtests.bench.prompt_cost`). Nothing compares these
        # across processes: the index is local to this one.
        parent = xxh3_64_intdigest(view[start : start + CHUNK_BYTES], parent)
        hashes.append(parent)
    return tuple(hashes)


class _Opening(msgspec.Struct):
    role: str = ""
    content: msgspec.Raw = msgspec.Raw(b"")


_opening_decoder = msgspec.json.Decoder(_Opening)


def first_array_element(raw: Buffer) -> bytes | None:
    """The raw bytes of the first element of a JSON array of objects, found without decoding the rest; None
    when `raw` is not such an array (or its first element never closes). Work and copies grow with the first
    element only: windows of the buffer, doubling, are scanned with `bytes.find` from string to string."""
    view = memoryview(raw)
    window = 16 * 1024
    while True:
        buf = bytes(view[:window])
        opening = _ARRAY_OF_OBJECTS.match(buf)
        if opening is None:
            return None
        start = opening.end() - 1
        end = _object_end(buf, start)
        if end is not None:
            return buf[start:end]
        if window >= len(view):
            return None
        window *= 4


def _object_end(buf: bytes, start: int) -> int | None:
    """The index after the JSON value opening at `buf[start]` (a bracket), or None if `buf` ends first."""
    depth = 0
    pos = start
    while True:
        quote = buf.find(b'"', pos)
        for i, ch in enumerate(buf[pos : len(buf) if quote < 0 else quote]):  # structure: a few bytes
            if ch in _OPENERS:
                depth += 1
            elif ch in _CLOSERS:
                depth -= 1
                if depth == 0:
                    return pos + i + 1
        if quote < 0:
            return None
        close = buf.find(b'"', quote + 1)
        while close >= 0 and _escaped(buf, close):
            close = buf.find(b'"', close + 1)
        if close < 0:
            return None
        pos = close + 1


def _escaped(buf: bytes, i: int) -> bool:
    """Whether the quote at `buf[i]` is escaped (an odd run of backslashes before it)."""
    k = i - 1
    while buf[k] == 0x5C:
        k -= 1
    return (i - 1 - k) % 2 == 1


def system_prompt_head(messages: Buffer) -> bytes:
    """The first `SIGNATURE_SYSTEM_BYTES` bytes of the raw content of the conversation's first message when it
    is a system (or developer) message, else b""."""
    first = first_array_element(messages)
    if first is None:
        return b""
    try:
        opening = _opening_decoder.decode(first)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return b""
    if opening.role not in SYSTEM_ROLES:
        return b""
    return bytes(memoryview(opening.content)[:SIGNATURE_SYSTEM_BYTES])


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
