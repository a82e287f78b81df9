"""What the proxy can tell about a prompt without tokenizing it: its rough length and its prefix chunks.

Contract: `prefix_hashes(raw)` returns one chain hash per full chunk of `4 x PREFIX_CHUNK_TOKENS` bytes of the
raw JSON of the prompt (`messages` or `prompt`), each hash covering every byte before it, so two calls of a
conversation that grew by appending messages share their leading hashes. JSON bytes stand in for tokens (about
four bytes a token): good enough for an approximate prefix index, which is all a router without the
replica's tokenizer can have.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sized

from proxy.scheduler.types import PREFIX_CHUNK_TOKENS

BYTES_PER_TOKEN = 4
CHUNK_BYTES = BYTES_PER_TOKEN * PREFIX_CHUNK_TOKENS


def estimated_tokens(raw: Sized) -> int:
    return len(raw) // BYTES_PER_TOKEN


def prefix_hashes(raw: bytes) -> tuple[int, ...]:
    hashes: list[int] = []
    parent = b""
    view = memoryview(raw)
    for start in range(0, len(raw) - CHUNK_BYTES + 1, CHUNK_BYTES):
        parent = hashlib.blake2b(view[start : start + CHUNK_BYTES], digest_size=8, key=parent).digest()
        hashes.append(int.from_bytes(parent, "big"))
    return tuple(hashes)
