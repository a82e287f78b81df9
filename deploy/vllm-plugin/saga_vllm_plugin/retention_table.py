"""KV retention, contract v2: a session's cached blocks held out of eviction for a TTL, with a priority.

Contract (docs/retention-api.md; the same contract the vLLM plugin serves on real vLLM):
- A retention is one extra reference, taken with `BlockPool.touch`, on each block of a session's cached
  prefix chain, so the blocks never reach the free queue and are never evicted, yet still give prefix hits.
  Releasing frees them last-first exactly once. At most one retention per session: a new one takes its
  references before the one it replaces is released, so shared blocks never pass through the free queue.
- Each retention has a priority (an int, lower = more important, as vLLM's request priority). The release
  order under pressure is least important first, then oldest (least recently created or re-armed) first.
- Who may break a retention (the engine calls these; expired retentions are released first, by `expire`
  at the start of every step): `make_room(..., priority=p)` for a waiting request releases only
  retentions strictly less important than `p`; `make_room(..., priority=None)` (nothing is running, so the
  queue's head must progress) may release any; `release_least_important` (a running request needs a block)
  releases any. `make_room` releases nothing unless releasing would let the request in.
- Caps, enforced here because any client may ask: a TTL above `max_ttl_s` is clamped to it (the granted TTL
  is reported); a session id longer than `MAX_SESSION_ID_CHARS` is refused (ValueError); retained blocks
  (distinct, counted once however many sessions share them) stay within `max_blocks` = floor(`max_fraction`
  x pool size), and references (the sum over retentions of their blocks, shared ones counted once per
  retention) within `max_references` = max(`REFERENCES_PER_RETAINED_BLOCK` x `max_blocks`,
  `MIN_MAX_REFERENCES`). A new retention that would exceed either cap first drops other retentions no
  more important than itself (least important, then oldest first); if it still exceeds one it keeps only
  the leading blocks that fit (a shorter prefix still gives hits), or none, and then is not kept at all.
  Every retention holds at least one block, so the entries, their ids and their block lists take memory
  in O(pool size) however many sessions ask.
- `version` changes whenever the set of retentions, their priorities or their blocks change, so a caller
  caching "this request cannot be admitted" knows when to look again; `next_expiry()` is the earliest
  `expires_at`, an event that can change admission. The expiries that re-arming leaves stale are
  compacted away, so however often clients re-arm, they stay within twice the retentions (plus 64).
- Time is simulated seconds passed in by the caller; a retention with `expires_at <= now` is released by
  `expire(now)`. No I/O; the engine calls this on its own thread of control only.
- Bookkeeping (no effect on any decision): `ended` sums, per way a retention ended, the count and the
  block-seconds (its blocks, each counted once per retention holding it, times the time from its creation
  to its end): "used" (the session's next call took the blocks over, or its new retention replaced it:
  `release(session)`), "expired" (its TTL ran out), "dropped" (released early by the cap, memory pressure
  or a prefix-cache reset), "released" (a client let it go: `release(session, "released")`). Calls without
  a time (`release`, `make_room`, `release_least_important`) end retentions at the latest time the table
  was given (`retain`, `extend`, `expire`; the engine expires at the start of every step); an expired one
  ends at its `expires_at`. `held_block_seconds(now)` is what the live ones have held so far.
- This module imports nothing of the project: the vLLM plugin (deploy/vllm-plugin) ships a byte-identical
  copy, so the simulated replica and real vLLM serve one implementation of the contract.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal, Protocol

import msgspec


class KvPool(Protocol):
    """The block pool a table holds references in (simulator.block_pool.BlockPool; on real vLLM, the plugin's
    adapter over vLLM's BlockPool). Blocks are ints; `free` drops one reference each, in the order given."""

    @property
    def num_blocks(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def num_free(self) -> int: ...
    def ref_count(self, block_id: int) -> int: ...
    def num_evictable(self, block_ids: Iterable[int]) -> int: ...
    def touch(self, block_ids: Sequence[int]) -> None: ...
    def free(self, block_ids: Iterable[int]) -> None: ...


RetentionEnd = Literal["used", "expired", "dropped", "released"]
DEFAULT_MAX_RETAINED_FRACTION = 0.5
DEFAULT_MAX_RETAIN_TTL_S = 600.0
# The longest id the SAGA proxy sends: a client's (at most 256, proxy/identity.py MAX_ID_CHARS) prefixed
# with its API key's tenant (at most 128, proxy/config.py) and ":" (proxy/identity.py scheduled_session_id).
MAX_SESSION_ID_CHARS = 512
# The retention priorities both servers accept: what the vLLM engine client's msgpack carries (signed 64-bit;
# an int outside fails to encode there, a 500 instead of a 400).
PRIORITY_MIN, PRIORITY_MAX = -(2**63), 2**63 - 1
# Sessions sharing a prompt's blocks each hold their own references. 4 per retained block lets four sessions
# share a whole cap's worth of context, or more share part of it (the simulated workloads peak at 1.2); the
# floor keeps a tiny pool useful to dozens of sessions. Worst case, one block per retention, ~1 KB each with
# a 512-character id: ~2 KB per pool block at the default fraction, beside the MBs of KV each block holds.
REFERENCES_PER_RETAINED_BLOCK = 4
MIN_MAX_REFERENCES = 1024


class RetentionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One session's retention as the HTTP API reports it (times in simulated seconds)."""

    session_id: str
    num_blocks: int
    num_tokens: int
    priority: int
    retained_at: float  # when it was created or last re-armed
    expires_at: float
    ttl_left_s: float
    ttl_clamped: bool = False  # the asked TTL exceeded the server's cap


class RetentionTotals(msgspec.Struct, kw_only=True):
    """Retentions that ended one way: how many, and the block-seconds they held."""

    count: int = 0
    block_seconds: float = 0.0


class _Retention:
    __slots__ = ("block_ids", "expires_at", "held_since", "priority", "retained_at", "stamp", "ttl_clamped")

    def __init__(
        self, block_ids: list[int], priority: int, retained_at: float, expires_at: float, clamped: bool
    ) -> None:
        self.block_ids = block_ids
        self.priority = priority
        self.retained_at = retained_at
        self.expires_at = expires_at
        self.ttl_clamped = clamped
        self.held_since = retained_at  # creation; `retained_at` moves when re-armed
        self.stamp = 0  # age order: larger is newer; also tells live expiry-heap entries from stale ones


def check_ttl(ttl_s: float) -> None:
    """Raise ValueError unless `ttl_s` is a positive, finite number of seconds."""
    if not (math.isfinite(ttl_s) and ttl_s > 0):
        raise ValueError(f"a retention TTL must be a positive number of seconds, got {ttl_s}")


def retain_priority(raw: object) -> int:
    """A retention priority as a request's `vllm_xargs.saga_retain_priority` gives it: an integer, a float
    with no fraction or an integer string, in [PRIORITY_MIN, PRIORITY_MAX]; ValueError otherwise (a
    non-finite float included: `int(inf)` would raise OverflowError on the engine thread, which stopped
    vLLM, and a priority past 64 bits hung it once its output could not be encoded)."""
    try:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ValueError
        if isinstance(raw, float) and not raw.is_integer():
            raise ValueError
        priority = int(raw)
    except (ValueError, OverflowError):
        raise ValueError(f"a retention priority must be an integer, got {raw!r}") from None
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(f"a retention priority must be a signed 64-bit integer, got {raw!r}")
    return priority


def check_session_id(session_id: str) -> None:
    """Raise ValueError if `session_id` is longer than `MAX_SESSION_ID_CHARS`."""
    if len(session_id) > MAX_SESSION_ID_CHARS:
        raise ValueError(
            f"a session id must be at most {MAX_SESSION_ID_CHARS} characters, got {len(session_id)}"
        )


class RetentionTable:
    """Retentions of one engine's block pool, keyed by session id."""

    def __init__(
        self,
        pool: KvPool,
        *,
        max_fraction: float = DEFAULT_MAX_RETAINED_FRACTION,
        max_ttl_s: float = DEFAULT_MAX_RETAIN_TTL_S,
    ) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max retained fraction must be in [0, 1], got {max_fraction}")
        check_ttl(max_ttl_s)
        self._pool = pool
        self.max_blocks = int(max_fraction * pool.num_blocks)
        self.max_references = max(REFERENCES_PER_RETAINED_BLOCK * self.max_blocks, MIN_MAX_REFERENCES)
        self.max_ttl_s = max_ttl_s
        self._by_session: dict[str, _Retention] = {}
        self._by_priority: dict[int, OrderedDict[str, _Retention]] = {}  # each oldest first
        self._expiry: list[tuple[float, int, str]] = []  # (expires_at, stamp, session), some stale (_insert)
        self._holders: dict[int, int] = {}  # block id -> retentions holding it
        self.num_references = 0  # the sum of the holders' counts: blocks of every retention
        self._stamp = 0
        self.version = 0
        self.num_dropped = 0  # released early, by the cap or by memory pressure
        self.ended: dict[RetentionEnd, RetentionTotals] = {
            "used": RetentionTotals(),
            "expired": RetentionTotals(),
            "dropped": RetentionTotals(),
            "released": RetentionTotals(),
        }
        self._now = 0.0  # the latest time given, for ends that come without one

    @property
    def num_sessions(self) -> int:
        return len(self._by_session)

    @property
    def num_blocks(self) -> int:
        """Distinct blocks held by retentions."""
        return len(self._holders)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._by_session

    def retain(
        self, session_id: str, block_ids: Sequence[int], ttl_s: float, now: float, priority: int = 0
    ) -> RetentionInfo | None:
        """Hold `block_ids` (a cached prefix chain, in order) for `session_id` until `now + ttl_s` (clamped)
        with `priority`, replacing its previous retention. None when the caps leave it no block at all (then
        the session holds none). ValueError for a TTL that is not positive or an id that is too long."""
        check_ttl(ttl_s)
        check_session_id(session_id)
        self._now = max(self._now, now)
        blocks = list(block_ids[: self.max_blocks])
        if not blocks:
            self.release(session_id)
            return None
        self._pool.touch(blocks)  # the new references first: blocks shared with the old one stay held
        previous = self._remove(session_id)
        if previous is not None:
            self._account(previous, "used")
        granted = min(ttl_s, self.max_ttl_s)
        retention = _Retention(blocks, priority, now, now + granted, granted < ttl_s)
        self._insert(session_id, retention)
        self._hold(blocks)
        if previous is not None:
            self._unhold(previous.block_ids)
        self._enforce_cap(session_id, retention)
        return self.info(session_id, now)

    def extend(
        self, session_id: str, ttl_s: float, now: float, priority: int | None = None
    ) -> RetentionInfo | None:
        """Re-arm a retention to expire at `now + ttl_s` (clamped; may also shorten it), make it the newest
        and, when given, change its priority; None if the session holds none."""
        check_ttl(ttl_s)
        self._now = max(self._now, now)
        retention = self._remove(session_id)
        if retention is None:
            return None
        granted = min(ttl_s, self.max_ttl_s)
        retention.retained_at = now
        retention.expires_at = now + granted
        retention.ttl_clamped = granted < ttl_s
        if priority is not None:
            retention.priority = priority
        self._insert(session_id, retention)
        return self.info(session_id, now)

    def make_room(self, num_new: int, hit: Sequence[int], priority: int | None) -> bool:
        """Let a waiting request in: release retentions strictly less important than `priority` (any when
        None), least important then oldest first, until `num_new` fresh blocks plus the free blocks of its
        prefix `hit` fit; True if they do. Releases nothing when even releasing every such retention would
        not make room (other requests or more important retentions hold the blocks)."""
        if not self._by_session:
            return False
        pool = self._pool
        hit_blocks = set(hit)
        ref_count = pool.ref_count
        if priority is None:
            holders = self._holders
        else:
            holders = {}
            for retention in self._breakable_by(priority):
                for b in retention.block_ids:
                    holders[b] = holders.get(b, 0) + 1
            if not holders:
                return False
        # blocks only these retentions hold; those in the hit would leave the free queue again when touched
        reclaimable = sum(1 for b, n in holders.items() if ref_count(b) == n and b not in hit_blocks)
        if num_new + pool.num_evictable(hit) > pool.num_free + reclaimable:
            return False
        for session_id in [s for s, _ in self._release_order(priority)]:
            if num_new + pool.num_evictable(hit) <= pool.num_free:
                break
            self.release(session_id, way="dropped")
            self.num_dropped += 1
        return num_new + pool.num_evictable(hit) <= pool.num_free

    def release_least_important(self) -> bool:
        """Drop the least important (then oldest) retention early, for a running request that needs a
        block; False if there is none."""
        for session_id, _ in self._release_order(None):
            self.release(session_id, way="dropped")
            self.num_dropped += 1
            return True
        return False

    def release(self, session_id: str, way: RetentionEnd = "used") -> int | None:
        """Drop a session's retention; the number of blocks it held, or None if it held none. `way`: how it
        ended, for the bookkeeping ("used": the session's next call took the blocks over)."""
        retention = self._remove(session_id)
        if retention is None:
            return None
        self._account(retention, way)
        self.version += 1
        self._unhold(retention.block_ids)
        return len(retention.block_ids)

    def expire(self, now: float) -> int:
        """Release every retention whose TTL has run out by `now`; how many were released."""
        heap = self._expiry
        released = 0
        self._now = max(self._now, now)
        while heap and heap[0][0] <= now:
            _, stamp, session_id = heapq.heappop(heap)
            retention = self._by_session.get(session_id)
            if retention is not None and retention.stamp == stamp:
                self.release(session_id, way="expired")
                released += 1
        return released

    def next_expiry(self) -> float | None:
        """The earliest time a retention expires (releasing blocks, which may let a waiting request in);
        None when there is none."""
        heap = self._expiry
        while heap:
            expires_at, stamp, session_id = heap[0]
            retention = self._by_session.get(session_id)
            if retention is not None and retention.stamp == stamp:
                return expires_at
            heapq.heappop(heap)  # stale: released or re-armed since
        return None

    def release_all(self) -> int:
        """Release every retention (before a prefix-cache reset); how many were released."""
        sessions = list(self._by_session)
        for session_id in sessions:
            self.release(session_id, way="dropped")
        self._expiry.clear()
        return len(sessions)

    def info(self, session_id: str, now: float) -> RetentionInfo | None:
        retention = self._by_session.get(session_id)
        if retention is None:
            return None
        num_blocks = len(retention.block_ids)
        return RetentionInfo(
            session_id=session_id,
            num_blocks=num_blocks,
            num_tokens=num_blocks * self._pool.block_size,
            priority=retention.priority,
            retained_at=retention.retained_at,
            expires_at=retention.expires_at,
            ttl_left_s=max(0.0, retention.expires_at - now),
            ttl_clamped=retention.ttl_clamped,
        )

    def snapshot(self, now: float) -> list[RetentionInfo]:
        """Every retention, oldest first."""
        ordered = sorted(self._by_session.items(), key=lambda item: item[1].stamp)
        return [info for s, _ in ordered if (info := self.info(s, now)) is not None]

    def held_block_seconds(self, now: float) -> float:
        """Block-seconds the live retentions have held from their creation to `now`."""
        return sum(len(r.block_ids) * max(0.0, now - r.held_since) for r in self._by_session.values())

    def held(self) -> list[list[int]]:
        """Each retention's blocks (the references it holds, for invariant checks)."""
        return [list(r.block_ids) for r in self._by_session.values()]

    # ---- internals ------------------------------------------------------------------------------------

    def _remove(self, session_id: str) -> _Retention | None:
        retention = self._by_session.pop(session_id, None)
        if retention is not None:
            bucket = self._by_priority[retention.priority]
            del bucket[session_id]
            if not bucket:
                del self._by_priority[retention.priority]
        return retention

    def _account(self, retention: _Retention, way: RetentionEnd) -> None:
        totals = self.ended[way]
        totals.count += 1
        # an expired one held its blocks as granted, to its TTL, however late `expire` ran
        end = min(self._now, retention.expires_at) if way == "expired" else self._now
        totals.block_seconds += len(retention.block_ids) * max(0.0, end - retention.held_since)

    def _insert(self, session_id: str, retention: _Retention) -> None:
        self._stamp += 1
        self.version += 1
        retention.stamp = self._stamp
        self._by_session[session_id] = retention
        self._by_priority.setdefault(retention.priority, OrderedDict())[session_id] = retention
        heap = self._expiry
        heapq.heappush(heap, (retention.expires_at, retention.stamp, session_id))
        if len(heap) > 2 * len(self._by_session) + 64:
            # re-arming leaves stale entries until their old expiry: a client calling `extend` in a loop
            # would grow the heap without bound; keep the live ones (same order: stamps are unique)
            live = self._by_session.items()
            self._expiry = [(r.expires_at, r.stamp, s) for s, r in live]
            heapq.heapify(self._expiry)

    def _release_order(self, priority: int | None) -> Iterator[tuple[str, _Retention]]:
        """Retentions breakable by a request of `priority` (all when None), least important then oldest
        first. Snapshot per bucket: callers may release while iterating."""
        for p in sorted(self._by_priority, reverse=True):
            if priority is not None and p <= priority:
                return
            yield from list(self._by_priority.get(p, {}).items())

    def _breakable_by(self, priority: int) -> Iterator[_Retention]:
        for p, bucket in self._by_priority.items():
            if p > priority:
                yield from bucket.values()

    def _within_caps(self) -> bool:
        return self.num_blocks <= self.max_blocks and self.num_references <= self.max_references

    def _enforce_cap(self, session_id: str, new: _Retention) -> None:
        """Drop others no more important than `new` (least important, then oldest first), then cut `new`
        to the leading blocks that fit both caps (dropping it if none do)."""
        if self._within_caps():
            return
        for other, retention in self._release_order(None):
            if self._within_caps() or retention.priority < new.priority:
                break
            if other != session_id:
                self.release(other, way="dropped")
                self.num_dropped += 1
        if self._within_caps():
            return
        excess = self.num_blocks - self.max_blocks
        excess_references = self.num_references - self.max_references
        holders = self._holders
        keep = len(new.block_ids)
        # drop the tail: each block cut is one reference less; one others hold too frees no distinct block
        while (excess > 0 or excess_references > 0) and keep > 0:
            keep -= 1
            excess_references -= 1
            if holders[new.block_ids[keep]] == 1:
                excess -= 1
        if keep == 0:
            self.release(session_id, way="dropped")
            self.num_dropped += 1
            return
        dropped = new.block_ids[keep:]
        new.block_ids = new.block_ids[:keep]
        self.version += 1
        self._unhold(dropped)

    def _hold(self, block_ids: list[int]) -> None:
        self.num_references += len(block_ids)
        holders = self._holders
        for block_id in block_ids:
            holders[block_id] = holders.get(block_id, 0) + 1

    def _unhold(self, block_ids: list[int]) -> None:
        self.num_references -= len(block_ids)
        holders = self._holders
        for block_id in block_ids:
            holders[block_id] -= 1
            if holders[block_id] == 0:
                del holders[block_id]
        self._pool.free(reversed(block_ids))
