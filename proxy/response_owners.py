"""Which worker served an answer, for `saga serve --workers N`, in two tables of one layout:
- `ResponseOwners`: a Responses API answer's id. A call that continues a conversation through
  `previous_response_id` alone names no session and repeats none of the conversation, so its owner cannot be
  computed from the call (proxy/identity.py `ownership_key`); the worker that served the response knows its
  session (proxy/session_chain.py), so the call goes there.
- `ChainOwners`: a chat answer's prefix-chain key (proxy/session_chain.py `answer_key`: the conversation up
  to and with that answer). A call naming no session that repeats the answer continues the session of the
  worker that served it, which keeps the chain index: the call goes there. So a conversation's first call
  can be served by whichever worker read it (proxy/fast_server.py), and calls sharing one opening are not all
  one worker's.
- `ChainOwners` also holds where a compacting agent's new conversation was sent (`record_sent`), keyed
  apart from the answers: the first call sent again goes to the same worker.
- `QuoteOwners`: the lines an answer files for a compacting agent (proxy/quoted_answers.py `answer_lines`),
  and each tag that has lines filed. An agent naming no session that compacts its history starts a new
  conversation quoting its summary, and only the worker that served the summary holds the session: the
  new conversation's first call goes there (before, 5-6 of 12 compactions were linked with two workers).

Layout: a file in the worker directory (`WorkerSet.directory`: `responses.table`, `chains.table`,
`quotes.table`) shared by
every worker: `slots` slots of two int64 words, in buckets of `WAYS` slots. A key's digest (its first 16
bytes; the same in every process: BLAKE2b of a response id, a chain key is a digest already) gives a bucket
and a 54-bit tag; a slot holds `tag << 9 | worker` (workers are at most 256; 0 is an empty slot, a tag is
never 0) and when it was written (CLOCK_MONOTONIC, the same clock in every process). A record takes the key's
own slot in its bucket, else an empty one, else the one written longest ago: so an entry is lost only once
`WAYS` later keys fell in its bucket. At 1,000 calls a second, of the conversations whose tool call took a
minute, a direct-mapped table of as many slots (any one later key in its slot loses it) would lose ~11%; this
one lost 5 in 400,000 (`python -m loadtests.bench.owner_table_loss`).

Contract:
- `record(key)` after this worker served that answer, before its last bytes go out (so a call the client
  sends the moment the answer ends finds it); `owner(key)` is the worker that recorded it last, or -1 if none
  did or it was pushed out since. A lost entry costs what it costs in a single process past
  `PrefixChains.max_entries`: the call starts a session of its own (a chat call: where its conversation's
  opening hashes, so a conversation whose entry was lost may go on as a new session on another worker).
- No locks: a slot's owner word is one aligned 8-byte store (atomic on x86-64 and arm64), so a reader sees
  the old or the new word, never half of each; a word with another tag reads as -1. Two workers recording
  into one bucket at the same instant may pick the same slot: one of the two entries is lost.
- Bounded: `slots` x 16 bytes, fixed at open; every worker opens the same size. Responses: 4 MiB (262,144
  slots, over twice the 100,000 responses each worker's chain index keeps). Chains: 8 MiB (524,288 slots: a
  conversation is looked up by its latest answer, so what counts is one key per live conversation). Quotes:
  4 MiB (262,144 slots, and one flag word; an answer records its tag and its last three long lines, and a
  summary is quoted within seconds of its answer).
- A restarted worker keeps the table (the file outlives it), and its earlier answers' entries: those calls
  go to it and, its chain index being empty, start sessions of their own there.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time

from xxhash import xxh3_128_digest

from proxy.quoted_answers import QUOTES_NEEDED
from proxy.shared_load import map_shared

TABLE_FILE = "responses.table"
DEFAULT_SLOTS = 1 << 18
CHAINS_FILE = "chains.table"
CHAIN_SLOTS = 1 << 19
QUOTES_FILE = "quotes.table"
QUOTE_SLOTS = 1 << 18
# of the lines an answer files (its last long ones first), those the table holds: as many as the in-process
# look needs (a summary is quoted whole: Claude Code, Codex); each agent's call with a long answer records
# them (~1 µs each)
QUOTE_OWNER_LINES = QUOTES_NEEDED
WAYS = 8
_WORKER_BITS = 9
_WORKER_MASK = (1 << _WORKER_BITS) - 1
_TAG_BITS = 63 - _WORKER_BITS  # a non-negative int64 word
_WORD_MASK = (1 << 64) - 1
_NOTE_BITS = 2
_NOTE_MASK = (1 << _NOTE_BITS) - 1
assert QUOTE_OWNER_LINES <= _NOTE_MASK  # (each entry keeps its answer's count of lines in the note)


class _OwnerTable:
    def __init__(self, directory: str, index: int, slots: int, file: str, what: str, flags: int = 0) -> None:
        """`flags`: words after the slots, for a table's own use (`QuoteOwners`)."""
        if not 0 <= index <= _WORKER_MASK or slots < 1:
            raise ValueError(f"{what}: worker {index}, {slots} slots")
        self.index = index
        self.ways = min(WAYS, slots)
        self.buckets = slots // self.ways
        self.path = os.path.join(directory, file)
        self.flags = self.buckets * self.ways * 2  # the first flag word's index
        self._map = map_shared(self.path, (self.flags + flags) * 8)
        self._words = memoryview(self._map).cast("q")  # per slot: the owner word, then when it was written

    def _bucket_and_tag(self, digest: bytes) -> tuple[int, int]:
        return self._bucket_and_tag_of(int.from_bytes(digest, "little"))

    def _bucket_and_tag_of(self, digest: int) -> tuple[int, int]:
        """A 16-byte digest as a little-endian int: its first 8 bytes give the bucket, the next the tag."""
        tag = (digest >> 64 & _WORD_MASK) >> (64 - _TAG_BITS) or 1
        return ((digest & _WORD_MASK) % self.buckets) * self.ways * 2, tag

    def _record(self, digest: bytes) -> None:
        self._record_at(self._bucket_and_tag(digest), 0)

    def _record_at(self, bucket_and_tag: tuple[int, int], note: int, owner: int = -1) -> None:
        """`note`: kept in the low bits of when the slot was written (`_NOTE_BITS`; nanoseconds below them
        do not change which slot goes first); `owner`: the worker recorded (-1: this one)."""
        first, tag = bucket_and_tag
        words = self._words
        slot, oldest = first, -1
        for at in range(first, first + 2 * self.ways, 2):
            word = words[at]
            if word == 0 or word >> _WORKER_BITS == tag:
                slot = at
                break
            written = words[at + 1]
            if oldest < 0 or written < oldest:
                slot, oldest = at, written
        words[slot + 1] = time.monotonic_ns() & ~_NOTE_MASK | note
        words[slot] = tag << _WORKER_BITS | (self.index if owner < 0 else owner)

    def _owner(self, digest: bytes) -> int:
        first, tag = self._bucket_and_tag(digest)
        words = self._words
        for at in range(first, first + 2 * self.ways, 2):
            word = words[at]
            if word >> _WORKER_BITS == tag:
                return word & _WORKER_MASK
        return -1

    def close(self) -> None:
        self._words.release()
        self._map.close()


def _digest(response_id: str) -> bytes:
    return hashlib.blake2b(response_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class ResponseOwners(_OwnerTable):
    def __init__(self, directory: str, index: int, slots: int = DEFAULT_SLOTS) -> None:
        super().__init__(directory, index, slots, TABLE_FILE, "response owners")

    def record(self, response_id: str) -> None:
        self._record(_digest(response_id))

    def owner(self, response_id: str) -> int:
        return self._owner(_digest(response_id))


class ChainOwners(_OwnerTable):
    def __init__(self, directory: str, index: int, slots: int = CHAIN_SLOTS) -> None:
        super().__init__(directory, index, slots, CHAINS_FILE, "chain owners")

    def record(self, chain_key: bytes) -> None:
        self._record(chain_key)

    def owner(self, chain_key: bytes) -> int:
        return self._owner(chain_key)

    def record_sent(self, conversation: bytes, owner: int) -> None:
        """This worker sent a compacting agent's new conversation (`conversation`: the chain hash of its
        first call, all it sent) to `owner`, whose answer it quotes (`QuoteOwners.claim`, which clears what
        it found): the same call sent again, as a client retries one whose stream dropped, goes there too
        (before, a retry read by the worker that had claimed the lines found nothing and started a session
        of its own: 2-7 of 8 linked with two workers). `owner` decides there, as for the first attempt."""
        self._record_at(self._bucket_and_tag(_sent_digest(conversation)), 0, owner)

    def sent_to(self, conversation: bytes) -> int:
        """The worker a conversation's first call was sent to by `record_sent`, or -1."""
        return self._owner(_sent_digest(conversation))


def _sent_digest(conversation: bytes) -> bytes:
    return xxh3_128_digest(b"sent-to-quoted\x00" + conversation)


class QuoteOwners(_OwnerTable):
    """`record(tag, lines)` as an answer's lines are filed (before its last bytes go out): the tag, and the
    last `QUOTE_OWNER_LINES` lines with how many of them there are; `anything_filed()`: whether any worker
    filed anything (one word: one-shot traffic files nothing), asked first; `filed(tag)`: whether a worker
    filed lines under `tag` (one lookup), asked next; `claim(digests)`: the worker whose recorded lines a new
    conversation holds (proxy/quoted_answers.py `quoted_lines` under `tag`) as many as the in-process look
    needs (`QUOTES_NEEDED`, or all of an answer's when it recorded fewer), or -1; those entries are then
    cleared, so one conversation is sent there for one answer (the next quoting it, as subagents given an
    orchestrator's plan do, is served where it was read). The filing worker's index
    (proxy/quoted_answers.py `QuotedAnswers`) decides whether the conversation takes the session up. A
    conversation quoting a summary in part, without its last lines, is not sent there; it is linked only if
    the worker that read it filed the summary."""

    def __init__(self, directory: str, index: int, workers: int, slots: int = QUOTE_SLOTS) -> None:
        super().__init__(directory, index, slots, QUOTES_FILE, "quote owners", flags=1)
        self.workers = workers
        # a bucket's owner words at once (a probe that misses reads all of them: ~0.5 µs, against ~0.7 a word
        # at a time; a first call may have hundreds of lines to look up)
        self._owner_words = struct.Struct("q8x" * self.ways).unpack_from

    def record(self, tag: str, lines: list[int]) -> None:
        if lines:
            if not self._words[self.flags]:
                self._words[self.flags] = 1  # (written once: not a store per answer to a line all share)
            self._record(_tag_digest(tag))
            kept = lines[:QUOTE_OWNER_LINES]
            for line in kept:
                self._record_at(self._bucket_and_tag_of(line), len(kept))

    def anything_filed(self) -> bool:
        return self._words[self.flags] != 0

    def filed(self, tag: str) -> bool:
        return self._owner(_tag_digest(tag)) >= 0

    def claim(self, digests: list[int]) -> int:
        words, owner_words, table = self._words, self._owner_words, self._map
        buckets, bucket_words, workers = self.buckets, self.ways * 2, range(self.workers)
        hits: dict[int, list[int]] = {}
        needed: dict[int, int] = {}
        for line in digests:  # (`_bucket_and_tag_of` and `_owner`, inlined: a call may look up hundreds)
            first = (line & _WORD_MASK) % buckets * bucket_words
            in_bucket = owner_words(table, first * 8)
            tagged = ((line >> 64 & _WORD_MASK) >> (64 - _TAG_BITS) or 1) << _WORKER_BITS
            for worker in workers:
                if tagged | worker in in_bucket:
                    at = first + 2 * in_bucket.index(tagged | worker)
                    if at not in hits.setdefault(worker, []):
                        hits[worker].append(at)
                        note = words[at + 1] & _NOTE_MASK or 1
                        needed[worker] = min(needed.get(worker, QUOTES_NEEDED), note)
                    break
        claimed = [worker for worker, slots in hits.items() if len(slots) >= needed[worker]]
        if not claimed:
            return -1
        owner = max(claimed, key=lambda worker: len(hits[worker]))
        for at in hits[owner]:
            words[at] = 0  # (an aligned store, as a record's; a slot emptied is taken first)
        return owner


def _tag_digest(tag: str) -> bytes:
    return xxh3_128_digest(f"quote-tag\x00{tag}".encode("utf-8", "surrogatepass"))
