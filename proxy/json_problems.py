"""What is wrong with a request body msgspec would not decode, said so a client can act on it.

Contract: `json_problem(body, error)` is msgspec's own message, except where that message misleads. A string
holding an unpaired UTF-16 surrogate escape (`\\ud83d` without its `\\ude00`: JavaScript's `JSON.stringify`
writes one for text cut inside an emoji, as an agent truncating a tool's output by length does) is valid
JSON text, but no UTF-8 string can hold it and no tokenizer can encode it (vLLM's fails on it too); msgspec
calls it "Input data was truncated". Only the error path calls this, which a client can choose, so its work
is bounded: a body over 16 MiB keeps msgspec's message (scanning 16 MiB of crafted escapes takes ~0.1 s).
A `NaN` or `Infinity` literal (not JSON; Python's `json.dumps` writes them, vLLM's parser reads them, the
proxy does not) is named as such, with what to send instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import msgspec

# Bounds on the work for one body (this runs on the error path, which a client can choose): `\\ud` and
# `\\uD` found (each by bytes.find, at C speed), and backslashes counted back from one (a real client
# escapes one backslash, not hundreds). Past either, msgspec's own message stands.
_LARGEST_BODY = 16 << 20
_MOST_HITS = 65536
_LONGEST_RUN = 64
_BACKSLASH = 0x5C
_SURROGATE_DIGIT = frozenset(b"89abcdefABCDEF")  # \ud800-\udfff
_LOW_DIGIT = frozenset(b"cdefCDEF")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _surrogate_escapes(body: bytes) -> Iterator[tuple[int, bool]]:
    """(offset, is low) of each `\\uDxxx` surrogate escape in `body`, in order, escaped or not; after
    `_MOST_HITS` places that begin like one it gives up with (-1, False), so that a pair the bound cut in two
    does not read as unpaired."""
    lower, upper = body.find(b"\\ud"), body.find(b"\\uD")
    for _ in range(_MOST_HITS):
        if lower < 0 and upper < 0:
            return
        at = upper if lower < 0 or 0 <= upper < lower else lower
        if at == lower:
            lower = body.find(b"\\ud", at + 1)
        else:
            upper = body.find(b"\\uD", at + 1)
        digits = body[at + 3 : at + 6]
        if len(digits) == 3 and digits[0] in _SURROGATE_DIGIT and _HEX.issuperset(digits[1:]):
            yield at, digits[0] in _LOW_DIGIT
    yield -1, False


def unpaired_surrogate(body: bytes) -> int | None:
    """The byte offset of the first unpaired surrogate escape in `body`, or None (also when the bounds
    above were reached first)."""
    if len(body) > _LARGEST_BODY:
        return None
    expect_low_at = -1  # where the last high surrogate's pair must start
    for at, low in _surrogate_escapes(body):
        if at < 0:  # the bound: what is still open is undecided
            return None
        run = 0  # backslashes before this one: an odd count escapes it (`\\\\ud83d` is text)
        while run <= _LONGEST_RUN and at - run > 0 and body[at - run - 1] == _BACKSLASH:
            run += 1
        if run > _LONGEST_RUN:
            return None
        if run % 2:
            continue
        if expect_low_at >= 0:
            if not (low and at == expect_low_at):
                return expect_low_at - 6
            expect_low_at = -1
        elif low:
            return at
        else:
            expect_low_at = at + 6
    return None if expect_low_at < 0 else expect_low_at - 6


_NOT_JSON_NUMBERS = (b"NaN", b"Infinity")
_INVALID_AT = re.compile(r"invalid character \(byte (\d+)\)$")


def _non_finite_literal(body: bytes, error: msgspec.DecodeError) -> int | None:
    """Where msgspec stopped at a `NaN` or `Infinity` literal (Python's `json.dumps` writes them for a float
    that is not finite; vLLM's parser takes them, JSON has no such thing), or None."""
    found = _INVALID_AT.search(str(error))
    if found is None:
        return None
    at = int(found.group(1))
    start = at - 1 if at and body[at - 1 : at] == b"-" else at
    return start if body.startswith(_NOT_JSON_NUMBERS, at) else None


def json_problem(body: bytes, error: msgspec.DecodeError) -> str:
    literal = _non_finite_literal(body, error)
    if literal is not None:
        return (
            f"{error}: a NaN or Infinity literal at byte {literal}, which JSON does not have (Python's "
            "json.dumps writes one for a float that is not finite); send a number or null instead "
            "(json.dumps(..., allow_nan=False) finds them)"
        )
    at = unpaired_surrogate(body)
    if at is None:
        return str(error)
    return (
        f"a string holds an unpaired UTF-16 surrogate escape at byte {at} (one of \\ud800-\\udfff without "
        "its pair: text cut inside a character), which no UTF-8 text or tokenizer can hold; replace it "
        "(e.g. with \\ufffd) before sending"
    )
