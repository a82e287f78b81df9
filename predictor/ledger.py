"""A KV retention ledger: which sessions' prefixes are kept, within a capacity in tokens, and which go first.

The model (stated, and shared by the retention policy and the offline reference it is measured against): one
cache of `capacity` tokens holds each waiting session's prefix as one unit. An entry is pinned until its TTL
runs out, then only cached. When room is needed, unpinned entries go first, least recently inserted first
(what vLLM's LRU does to blocks nobody holds); then pinned entries, the one with the largest `key` first (for
Bélády: the next use furthest away; for a predicted policy: the predicted next use, weighted).

With a `scorer`, pinned entries are ranked when room is needed by `scorer(session, now)` (largest goes first),
so a key may change as time passes (a predicted next use that slips as the session stays silent); the scan is
O(entries), which a KV cache keeps small (tens of sessions per replica).

Contract: `used <= capacity` after every call; `insert` returns the sessions evicted to make room (possibly
the inserted one itself, when its key is the largest or it cannot fit at all); `take` removes a session's
entry and returns its size (0 when it was not cached). Work per call is O(log n) amortised (lazy heaps).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Callable


class _Entry:
    __slots__ = ("deadline", "key", "pinned", "seq", "size")

    def __init__(self, size: int, seq: int, deadline: float, key: float) -> None:
        self.size, self.seq, self.deadline, self.key = size, seq, deadline, key
        self.pinned = True


class RetentionLedger:
    def __init__(self, capacity: int, scorer: Callable[[str, float], float] | None = None) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.scorer = scorer
        self._now = 0.0
        self.used = 0
        self.entries: dict[str, _Entry] = {}
        self._unpinned: OrderedDict[str, _Entry] = OrderedDict()
        self._by_key: list[tuple[float, int, str]] = []  # (-key, seq, session)
        self._by_deadline: list[tuple[float, int, str]] = []
        self._seq = 0

    def __contains__(self, session_id: str) -> bool:
        return session_id in self.entries

    def insert(self, session_id: str, size: int, now: float, ttl_s: float, key: float) -> list[str]:
        """Cache `size` tokens for the session (replacing its entry), pinned for `ttl_s` seconds."""
        self.take(session_id)
        self.advance(now)
        self._seq += 1
        entry = _Entry(size, self._seq, now + ttl_s, key)
        self.entries[session_id] = entry
        self.used += size
        if ttl_s <= 0:
            entry.pinned = False
            self._unpinned[session_id] = entry
        else:
            if self.scorer is None:
                heapq.heappush(self._by_key, (-key, entry.seq, session_id))
            if math.isfinite(entry.deadline):
                heapq.heappush(self._by_deadline, (entry.deadline, entry.seq, session_id))
        evicted = []
        while self.used > self.capacity:
            victim = self._victim()
            self.take(victim)
            evicted.append(victim)
        return evicted

    def take(self, session_id: str) -> int:
        entry = self.entries.pop(session_id, None)
        if entry is None:
            return 0
        self.used -= entry.size
        if not entry.pinned:
            self._unpinned.pop(session_id, None)
        return entry.size

    def advance(self, now: float) -> None:
        """Unpin the entries whose TTL has run out by `now`."""
        self._now = max(self._now, now)
        heap = self._by_deadline
        while heap and heap[0][0] <= now:
            _, seq, sid = heapq.heappop(heap)
            entry = self.entries.get(sid)
            if entry is not None and entry.seq == seq and entry.pinned:
                entry.pinned = False
                self._unpinned[sid] = entry

    def _victim(self) -> str:
        if self._unpinned:
            return next(iter(self._unpinned))
        if self.scorer is not None:
            score, now = self.scorer, self._now
            return max((sid for sid, e in self.entries.items() if e.pinned), key=lambda sid: score(sid, now))
        while self._by_key:
            _, seq, sid = heapq.heappop(self._by_key)
            entry = self.entries.get(sid)
            if entry is not None and entry.seq == seq and entry.pinned:
                return sid
        raise AssertionError("ledger over capacity with nothing to evict")
