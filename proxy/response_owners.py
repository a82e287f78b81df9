"""Which worker served a Responses API answer, for `saga serve --workers N`: a call that continues a
conversation through `previous_response_id` alone names no session and repeats none of the conversation, so
its owner cannot be computed from the call (proxy/identity.py `ownership_key`); the worker that served the
response knows its session (proxy/session_chain.py), so the call goes there.

Layout: the file `responses.table` in the worker directory (`WorkerSet.directory`) holds `slots` int64 words,
shared by every worker. A response id hashes to a slot and a 54-bit tag (blake2b: the same in every process);
the slot holds `tag << 9 | worker` (workers are at most 256). 0 is an empty slot (a tag is never 0).

Contract:
- `record(response_id)` after this worker served that response; `owner(response_id)` is the worker that
  recorded it last, or -1 if none did or its slot was taken since (a later response hashing to the same
  slot overwrites it). A lost entry costs what it costs in a single process past `PrefixChains.max_entries`:
  the call starts a session of its own where it was read.
- No locks: a record is one aligned 8-byte store (atomic on x86-64 and arm64), so a reader sees the old or
  the new word, never half of each; a word with another tag reads as -1.
- Bounded: `slots` x 8 bytes (2 MiB by default: 262,144 slots, over twice the 100,000 responses each
  worker's chain index keeps), fixed at open; every worker opens the same size.
- A restarted worker keeps the table (the file outlives it), and its earlier answers' entries: those calls
  go to it and, its chain index being empty, start sessions of their own there.
"""

from __future__ import annotations

import hashlib
import os

from proxy.shared_load import map_shared

TABLE_FILE = "responses.table"
DEFAULT_SLOTS = 1 << 18
_WORKER_BITS = 9
_WORKER_MASK = (1 << _WORKER_BITS) - 1
_TAG_BITS = 63 - _WORKER_BITS  # a non-negative int64 word


class ResponseOwners:
    def __init__(self, directory: str, index: int, slots: int = DEFAULT_SLOTS) -> None:
        if not 0 <= index <= _WORKER_MASK or slots < 1:
            raise ValueError(f"response owners: worker {index}, {slots} slots")
        self.index, self.slots = index, slots
        size = slots * 8
        self.path = os.path.join(directory, TABLE_FILE)
        self._map = map_shared(self.path, size)
        self._words = memoryview(self._map).cast("q")

    def _slot_and_tag(self, response_id: str) -> tuple[int, int]:
        digest = hashlib.blake2b(response_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        tag = int.from_bytes(digest[8:], "little") >> (64 - _TAG_BITS) or 1
        return int.from_bytes(digest[:8], "little") % self.slots, tag

    def record(self, response_id: str) -> None:
        slot, tag = self._slot_and_tag(response_id)
        self._words[slot] = tag << _WORKER_BITS | self.index

    def owner(self, response_id: str) -> int:
        slot, tag = self._slot_and_tag(response_id)
        word = self._words[slot]
        return word & _WORKER_MASK if word >> _WORKER_BITS == tag else -1

    def close(self) -> None:
        self._words.release()
        self._map.close()
