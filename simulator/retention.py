"""KV retention: a session's cached blocks held out of eviction for a TTL after its request ends.

Contract (docs/retention-api.md; the same contract the vLLM plugin serves on real vLLM):
- A retention is one extra reference, taken with `BlockPool.touch`, on each block of a session's cached
  prefix chain, so the blocks never reach the free queue and are never evicted, yet still give prefix hits.
  Releasing frees them last-first exactly once. At most one retention per session: a new one takes its
  references before the one it replaces is released, so shared blocks never pass through the free queue.
- Order: oldest first means least recently created or extended; that is the order in which the cap and
  memory pressure (`release_oldest`, `make_room`) drop retentions.
- Caps, enforced here because any client may ask: a TTL above `max_ttl_s` is clamped to it (the granted TTL
  is reported); retained blocks (distinct, counted once however many sessions share them) stay within
  `max_blocks` = floor(`max_fraction` x pool size). A new retention that would exceed the cap first drops
  the oldest other retentions; if it alone exceeds the cap, it keeps only its leading `max_blocks` blocks
  (a shorter prefix still gives hits).
- Time is simulated seconds passed in by the caller; a retention with `expires_at <= now` is released by
  `expire(now)`. No I/O; the engine calls this on its own thread of control only.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import msgspec

from simulator.block_pool import BlockPool

DEFAULT_MAX_RETAINED_FRACTION = 0.5
DEFAULT_MAX_RETAIN_TTL_S = 600.0


class RetentionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One session's retention as the HTTP API reports it (times in simulated seconds)."""

    session_id: str
    num_blocks: int
    num_tokens: int
    retained_at: float  # when it was created or last extended
    expires_at: float
    ttl_left_s: float
    ttl_clamped: bool = False  # the asked TTL exceeded the server's cap


class _Retention:
    __slots__ = ("block_ids", "expires_at", "retained_at", "ttl_clamped")

    def __init__(self, block_ids: list[int], retained_at: float, expires_at: float, clamped: bool) -> None:
        self.block_ids = block_ids
        self.retained_at = retained_at
        self.expires_at = expires_at
        self.ttl_clamped = clamped


def check_ttl(ttl_s: float) -> None:
    """Raise ValueError unless `ttl_s` is a positive, finite number of seconds."""
    if not (math.isfinite(ttl_s) and ttl_s > 0):
        raise ValueError(f"a retention TTL must be a positive number of seconds, got {ttl_s}")


class RetentionTable:
    """Retentions of one engine's block pool, keyed by session id."""

    def __init__(
        self,
        pool: BlockPool,
        *,
        max_fraction: float = DEFAULT_MAX_RETAINED_FRACTION,
        max_ttl_s: float = DEFAULT_MAX_RETAIN_TTL_S,
    ) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max retained fraction must be in [0, 1], got {max_fraction}")
        check_ttl(max_ttl_s)
        self._pool = pool
        self.max_blocks = int(max_fraction * pool.num_blocks)
        self.max_ttl_s = max_ttl_s
        self._by_session: OrderedDict[str, _Retention] = OrderedDict()  # oldest first
        self._holders: dict[int, int] = {}  # block id -> retentions holding it
        self.num_dropped = 0  # released early, by the cap or by memory pressure

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
        self, session_id: str, block_ids: Sequence[int], ttl_s: float, now: float
    ) -> RetentionInfo | None:
        """Hold `block_ids` (a cached prefix chain, in order) for `session_id` until `now + ttl_s` (clamped),
        replacing its previous retention. None when the cap leaves room for no block at all."""
        check_ttl(ttl_s)
        blocks = list(block_ids[: self.max_blocks])
        if not blocks:
            self.release(session_id)
            return None
        self._pool.touch(blocks)  # the new references first: blocks shared with the old one stay held
        previous = self._by_session.pop(session_id, None)
        granted = min(ttl_s, self.max_ttl_s)
        self._by_session[session_id] = _Retention(blocks, now, now + granted, granted < ttl_s)
        self._hold(blocks)
        if previous is not None:
            self._unhold(previous.block_ids)
        while self.num_blocks > self.max_blocks:  # cannot empty the table: the new one alone fits
            self.release_oldest()
        return self.info(session_id, now)

    def extend(self, session_id: str, ttl_s: float, now: float) -> RetentionInfo | None:
        """Re-arm a retention to expire at `now + ttl_s` (clamped; may also shorten it) and make it the
        newest; None if the session holds none."""
        check_ttl(ttl_s)
        retention = self._by_session.get(session_id)
        if retention is None:
            return None
        granted = min(ttl_s, self.max_ttl_s)
        retention.retained_at = now
        retention.expires_at = now + granted
        retention.ttl_clamped = granted < ttl_s
        self._by_session.move_to_end(session_id)
        return self.info(session_id, now)

    def make_room(self, num_new: int, hit: Sequence[int]) -> bool:
        """A waiting request wins over retained blocks (so retention never deadlocks the engine): release
        retentions oldest first until `num_new` fresh blocks plus the free blocks of its prefix `hit` fit;
        True if they do. Releases nothing when even releasing every retention would not make room (running
        requests hold the blocks, and the request waits for them as on stock vLLM)."""
        if not self._holders:
            return False
        pool = self._pool
        hit_blocks = set(hit)
        ref_count = pool.ref_count
        # blocks only retentions hold; those in the hit would leave the free queue again when touched
        reclaimable = sum(1 for b, n in self._holders.items() if ref_count(b) == n and b not in hit_blocks)
        if num_new + pool.num_evictable(hit) > pool.num_free + reclaimable:
            return False
        while num_new + pool.num_evictable(hit) > pool.num_free and self.release_oldest():
            pass
        return num_new + pool.num_evictable(hit) <= pool.num_free

    def release(self, session_id: str) -> int | None:
        """Drop a session's retention; the number of blocks it held, or None if it held none."""
        retention = self._by_session.pop(session_id, None)
        if retention is None:
            return None
        self._unhold(retention.block_ids)
        return len(retention.block_ids)

    def release_oldest(self) -> bool:
        """Drop the oldest retention early (cap or memory pressure); False if there is none."""
        if not self._by_session:
            return False
        session_id = next(iter(self._by_session))
        self.release(session_id)
        self.num_dropped += 1
        return True

    def expire(self, now: float) -> int:
        """Release every retention whose TTL has run out by `now`; how many were released."""
        expired = [s for s, r in self._by_session.items() if r.expires_at <= now]
        for session_id in expired:
            self.release(session_id)
        return len(expired)

    def next_expiry(self) -> float:
        """When the first retention expires (inf if none): until then `expire` releases nothing."""
        return min((r.expires_at for r in self._by_session.values()), default=math.inf)

    def release_all(self) -> int:
        """Release every retention (before a prefix-cache reset); how many were released."""
        sessions = list(self._by_session)
        for session_id in sessions:
            self.release(session_id)
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
            retained_at=retention.retained_at,
            expires_at=retention.expires_at,
            ttl_left_s=max(0.0, retention.expires_at - now),
            ttl_clamped=retention.ttl_clamped,
        )

    def snapshot(self, now: float) -> list[RetentionInfo]:
        """Every retention, oldest first."""
        return [info for s in self._by_session if (info := self.info(s, now)) is not None]

    def held(self) -> list[list[int]]:
        """Each retention's blocks (the references it holds, for invariant checks)."""
        return [list(r.block_ids) for r in self._by_session.values()]

    def _hold(self, block_ids: list[int]) -> None:
        holders = self._holders
        for block_id in block_ids:
            holders[block_id] = holders.get(block_id, 0) + 1

    def _unhold(self, block_ids: list[int]) -> None:
        holders = self._holders
        for block_id in block_ids:
            holders[block_id] -= 1
            if holders[block_id] == 0:
                del holders[block_id]
        self._pool.free(reversed(block_ids))
