"""What is wrong with a request body msgspec would not decode, said so a client can act on it.

Contract: `json_problem(body, error)` is msgspec's own message, except where that message misleads. A string
holding an unpaired UTF-16 surrogate escape (`\\ud83d` without its `\\ude00`: JavaScript's `JSON.stringify`
writes one for text cut inside an emoji, as an agent truncating a tool's output by length does) is valid
JSON text, but no UTF-8 string can hold it and no tokenizer can encode it (vLLM's fails on it too); msgspec
calls it "Input data was truncated". Only the error path calls this: a body is scanned once, linearly.
"""

from __future__ import annotations

import re

import msgspec

# a run of backslashes before `u` and a surrogate's four hex digits: an escape when the run is odd
_SURROGATE = re.compile(rb"(\\+)u([dD][89a-fA-F][0-9a-fA-F]{2})")


def unpaired_surrogate(body: bytes) -> int | None:
    """The byte offset of the first unpaired surrogate escape in `body`, or None."""
    expect_low_at = -1  # where a high surrogate's pair must start
    for match in _SURROGATE.finditer(body):
        if len(match.group(1)) % 2 == 0:  # `\\ud800`: an escaped backslash, then text
            continue
        escape_at = match.end(1) - 1
        low = int(match.group(2), 16) >= 0xDC00
        if expect_low_at >= 0:
            if not (low and escape_at == expect_low_at):
                return expect_low_at - 6
            expect_low_at = -1
        elif low:
            return escape_at
        else:
            expect_low_at = match.end()
    if expect_low_at >= 0:
        return expect_low_at - 6
    return None


def json_problem(body: bytes, error: msgspec.DecodeError) -> str:
    at = unpaired_surrogate(body)
    if at is None:
        return str(error)
    return (
        f"a string holds an unpaired UTF-16 surrogate escape at byte {at} (one of \\ud800-\\udfff without "
        "its pair: text cut inside a character), which no UTF-8 text or tokenizer can hold; replace it "
        "(e.g. with \\ufffd) before sending"
    )
