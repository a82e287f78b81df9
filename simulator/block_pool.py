"""A paged KV cache with prefix caching: fixed blocks, reference counts, LRU eviction of freed blocks.

Contract (vLLM's v1 block pool):
- A block is in use while its reference count is > 0. Free blocks sit in one queue; new blocks are taken
  from its head. A freed block holding a cached hash joins the tail, so the least recently freed cached block
  is evicted first (LRU); a freed block holding none (a partial block) joins the head, to be reused before
  any cached block is evicted (vLLM 0.32's `free_blocks`).
- Only full blocks are cached (`cache_block`); a freed cached block keeps its hash and still gives hits until
  it is reused. If two blocks get the same hash (a repeated block-aligned prompt recomputes its last block;
  concurrent requests compute one prefix), both stay cached, as in vLLM: lookups find the first registered,
  and the hash stays cached until its last block is evicted.
- `lookup` returns the longest run of cached blocks matching a hash chain from its start, without taking
  references; `touch` takes them (a hit on a free block pulls it out of the free queue).
- The pool never raises on exhaustion: `allocate` returns None when too few blocks are free.
- KV events (simulator.kv_events), only while `kv_event_sink` is set: every hash entering the cache is
  reported (`log_stored`, called by the engine after `cache_block`, with the tokens and parent vLLM sends),
  every cached hash evicted by `allocate` as BlockRemoved, and `reset` as AllBlocksCleared; replaying them
  gives exactly the set of cached hashes. With no sink these paths cost one attribute test.

Layout (why arrays): a call of a long agent conversation touches, and later frees, thousands of blocks of its
prefix hit, so per-block work is the cost of a large discrete-event run. Reference counts, "holds a hash"
flags and "cached, not yet reused" flags are numpy arrays updated a whole request at a time; the free queue
is an array of block ids with lazy deletion: `_pos[b]` is the index of block b's live entry (-1 while b is in
use), an entry whose block has moved on (touched, or freed again further back) is skipped when the head
reaches it, and the array is compacted when it runs out of room. Order and results are those of an LRU
queue that removes blocks from its middle (tests/simulator/test_block_pool_differential.py compares).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import cast

import numpy as np
import numpy.typing as npt

from simulator.block_hash import BlockHash
from simulator.kv_events import AllBlocksCleared, KvEvent, block_removed, block_stored

BlockIds = Iterable[int] | npt.NDArray[np.int64]
_IN_USE = -1  # `_pos` of a block that is not in the free queue


def _int64s(n: int, fill: int = 0) -> tuple[array[int], npt.NDArray[np.int64]]:
    """An int64 buffer and a numpy view of it: the array for whole-request work, the buffer for one block
    at a time (indexing a Python array is several times cheaper than a numpy scalar access)."""
    buf = array("q", [fill]) * n
    return buf, np.frombuffer(buf, np.int64)


def _flags(n: int) -> tuple[bytearray, npt.NDArray[np.bool_]]:
    """A flag per block: a bytearray and a numpy bool view of it (see `_int64s`)."""
    buf = bytearray(n)
    return buf, np.frombuffer(buf, np.bool_)


def as_block_ids(block_ids: BlockIds) -> npt.NDArray[np.int64]:
    """Block ids as an int64 array (no copy if they are one), for callers that pass the same ids to several
    pool methods."""
    if isinstance(block_ids, np.ndarray):
        return block_ids
    if isinstance(block_ids, array) and block_ids.typecode == "q":
        return np.frombuffer(block_ids, np.int64)  # a view: the array cannot grow while it lives
    if isinstance(block_ids, list):
        return np.fromiter(block_ids, np.int64, len(block_ids))
    return np.fromiter(block_ids, np.int64)


class BlockPool:
    """`num_blocks` blocks of `block_size` tokens. Counts evictions and prefix-cache queries/hits."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"block pool needs positive sizes, got {num_blocks} blocks of {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        # each per-block table twice: `_x_at` (Python buffer) and `_x` (numpy view of the same memory)
        self._ref_at, self._ref = _int64s(num_blocks)
        self._hash: list[BlockHash | None] = [None] * num_blocks
        self._hashed_at, self._hashed = _flags(num_blocks)  # holds a cached hash, or duplicates one
        self._unreused_at, self._unreused = _flags(num_blocks)  # holds a hash no hit has reused yet
        # For `lookup_from`: the int hash a block is the cached block of (`_cached[h] == b`), where
        # `_int_cached[b]`; bytes hashes (the cryptographic algorithms) are never marked.
        self._phash_at, self._phash = _int64s(num_blocks)
        self._int_cached_at, self._int_cached = _flags(num_blocks)
        # The free queue: entries _queue[_head:_tail], live where _pos[_queue[i]] == i (see the docstring).
        self._queue_at, self._queue = _int64s(2 * num_blocks + 64)
        self._pos_at, self._pos = _int64s(num_blocks, _IN_USE)
        self._head = self._tail = 0
        self._reset_queue(np.arange(num_blocks, dtype=np.int64))
        self._num_free = num_blocks
        self._cached: dict[BlockHash, int] = {}  # hash -> the block lookups find (its `_hash` entry is set)
        # further blocks holding a cached hash, in registration order (rare; their `_hash` entry stays None)
        self._dups: dict[BlockHash, list[int]] = {}
        self._dup_of: dict[int, BlockHash] = {}
        self.num_evictions = 0
        # Bumped whenever blocks may become available to a waiting request (a free, a touch, a reset): the
        # engine skips re-trying an admission that failed while nothing that could let it in changed.
        self.version = 0
        self.query_tokens = 0
        self.hit_tokens = 0
        # Useful KV: of the hashes ever cached, how many a later prefix hit reused before their eviction.
        self.blocks_cached_total = 0
        self.blocks_reused_total = 0
        self.kv_event_sink: Callable[[KvEvent], None] | None = None  # KV events off while None

    @property
    def num_free(self) -> int:
        """Blocks that `allocate` can hand out (free, cached or not)."""
        return self._num_free

    @property
    def num_cached(self) -> int:
        """Distinct hashes cached now (in use or free; a duplicate block adds none)."""
        return len(self._cached)

    @property
    def usage(self) -> float:
        """Fraction of blocks in use (referenced by a request), as vLLM's kv_cache_usage_perc."""
        return 1.0 - self._num_free / self.num_blocks

    def ref_count(self, block_id: int) -> int:
        return self._ref_at[block_id]

    def is_free(self, block_id: int) -> bool:
        return self._pos_at[block_id] != _IN_USE

    def is_cached(self, block_hash: BlockHash) -> bool:
        return block_hash in self._cached

    def lookup(self, block_hashes: Iterable[BlockHash]) -> list[int]:
        """Ids of the cached blocks matching the longest prefix of `block_hashes`; takes no references.
        Stops pulling from `block_hashes` at the first miss, so a lazy hash generator stops hashing too."""
        cached = self._cached
        if isinstance(block_hashes, (list, array)):  # all at hand: look all up at C speed, then cut
            found = list(map(cached.get, block_hashes))
            if None in found:
                del found[found.index(None) :]
            return cast("list[int]", found)
        hit: list[int] = []
        for block_hash in block_hashes:
            block_id = cached.get(block_hash)
            if block_id is None:
                break
            hit.append(block_id)
        return hit

    def lookup_from(
        self, block_hashes: Sequence[BlockHash], num_hashes: int, candidates: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """`lookup(block_hashes[:num_hashes])` as an array, checking first whether `candidates[k]` is the
        block cached under `block_hashes[k]` (e.g. the chain the same conversation's previous request left):
        a leading run of good candidates costs array work instead of a dictionary look-up a block; the
        hashes after it are looked up as usual. Exact: a candidate counts only if it is the very block
        `_cached` maps that hash to."""
        m = min(len(candidates), num_hashes)
        j = 0
        if m:
            wanted: npt.NDArray[np.int64] | None
            if isinstance(block_hashes, array) and block_hashes.typecode == "q":  # viewed, not converted
                wanted = np.frombuffer(block_hashes, np.int64, m)
            else:
                try:
                    wanted = np.fromiter(block_hashes, np.int64, m)
                except (OverflowError, TypeError, ValueError):  # not 64-bit ints: no shortcut
                    wanted = None
            if wanted is not None:
                head = candidates[:m]
                good = self._int_cached[head] & (self._phash[head] == wanted)
                j = m if good.all() else int(np.argmin(good))
        # the rest one at a time, stopping at the first miss (a conversation's new blocks all miss)
        cached = self._cached
        rest: list[int] = []
        for k in range(j, min(num_hashes, len(block_hashes))):
            block_id = cached.get(block_hashes[k])
            if block_id is None:
                break
            rest.append(block_id)
        if not j:
            return as_block_ids(rest)
        if not rest:
            return candidates[:j]
        return np.concatenate((candidates[:j], as_block_ids(rest)))

    def num_evictable(self, block_ids: BlockIds) -> int:
        """How many of `block_ids` (distinct, as a prefix hit's are) are free now, i.e. would leave the free
        queue when touched."""
        ids = as_block_ids(block_ids)
        return int(np.count_nonzero(self._pos[ids] != _IN_USE)) if len(ids) else 0

    def touch(self, block_ids: BlockIds) -> None:
        """Take one reference on each block (a prefix hit: distinct blocks)."""
        self.version += 1
        ids = as_block_ids(block_ids)
        if len(ids) == 0:
            return
        ref = self._ref
        counts = ref[ids]
        ref[ids] = counts + 1
        leaving = ids[counts == 0]
        if len(leaving):
            self._pos[leaving] = _IN_USE  # their queue entries go stale
            self._num_free -= len(leaving)

    def allocate(self, n: int) -> list[int] | None:
        """`n` fresh blocks with one reference each, evicting cached ones LRU; None if fewer are free."""
        if n > self._num_free:
            return None
        if n <= 0:
            return []
        if n == 1:  # a decoding request's next block: scalar work beats array calls
            block_id = self._pop_one()
            self._ref_at[block_id] = 1
            if self._hashed_at[block_id]:
                self._evict([block_id])
                self._hashed_at[block_id] = self._int_cached_at[block_id] = self._unreused_at[block_id] = 0
            return [block_id]
        chosen = self._pop_free(n)
        self._ref[chosen] = 1
        hashed = self._hashed[chosen]
        if hashed.any():
            self._evict(chosen[hashed].tolist())
            self._hashed[chosen] = False
            self._int_cached[chosen] = False  # after eviction: a duplicate promoted in it may be chosen too
            self._unreused[chosen] = False
        return cast("list[int]", chosen.tolist())

    def _evict(self, block_ids: list[int]) -> None:
        """Drop the hashes of freshly allocated blocks that hold one (in this order): an evicted cached
        block's hash passes to its oldest duplicate if any, else leaves the cache (a KV event); a duplicate
        just leaves its hash's duplicates."""
        hashes = self._hash
        cached = self._cached
        dup_of = self._dup_of
        evicted: list[BlockHash] | None = None if self.kv_event_sink is None else []
        for block_id in block_ids:
            block_hash = hashes[block_id]
            if block_hash is not None:
                hashes[block_id] = None
                if cached.get(block_hash) == block_id and not (
                    self._dups and self._promote_dup(block_hash, block_id)
                ):
                    del cached[block_hash]
                    self.num_evictions += 1
                    if evicted is not None:
                        evicted.append(block_hash)
            elif block_id in dup_of:
                dup_hash = dup_of.pop(block_id)
                dups = self._dups[dup_hash]
                dups.remove(block_id)
                if not dups:
                    del self._dups[dup_hash]
        if evicted and self.kv_event_sink is not None:
            self.kv_event_sink(block_removed(evicted))

    def _promote_dup(self, block_hash: BlockHash, evicted_block: int) -> bool:
        """The cached block of `block_hash` is being evicted: its oldest duplicate, if any, takes the hash
        (and whether a prefix hit reused it)."""
        dups = self._dups.get(block_hash)
        if not dups:
            return False
        block_id = dups.pop(0)
        if not dups:
            del self._dups[block_hash]
        del self._dup_of[block_id]
        self._hash[block_id] = block_hash
        self._cached[block_hash] = block_id
        self._unreused[block_id] = self._unreused[evicted_block]
        self._mark_int_cached([block_id], [block_hash])
        return True

    def _mark_int_cached(self, block_ids: list[int], block_hashes: list[BlockHash]) -> None:
        """`block_ids` just became the cached blocks of `block_hashes`: note the int hashes for
        `lookup_from`."""
        if not isinstance(block_hashes[0], int):
            return
        if len(block_ids) == 1:
            try:
                self._phash_at[block_ids[0]] = block_hashes[0]
            except OverflowError:
                return
            self._int_cached_at[block_ids[0]] = 1
            return
        try:
            values = np.array(block_hashes, np.int64)
        except (OverflowError, TypeError, ValueError):  # a hash beyond 64 bits, or not an int: one by one
            for block_id, block_hash in zip(block_ids, block_hashes, strict=True):
                if isinstance(block_hash, int) and -(2**63) <= block_hash < 2**63:
                    self._mark_int_cached([block_id], [block_hash])
            return
        self._phash[block_ids] = values
        self._int_cached[block_ids] = True

    def free(self, block_ids: BlockIds) -> None:
        """Drop one reference on each block (distinct); of those reaching zero, the cached ones join the free
        queue's tail in this order and the others its head, the first of them becoming the head. Callers
        pass a request's blocks last-first, so its tail is evicted before its shared prefix."""
        self.version += 1
        ids = as_block_ids(block_ids)
        if len(ids) == 0:
            return
        ref = self._ref
        counts = ref[ids]
        ref[ids] = counts - 1
        freed = ids[counts == 1]
        if len(freed) == 0:
            return
        hashed = self._hashed[freed]
        if hashed.all():
            self._push_tail(freed)
        else:
            self._push_tail(freed[hashed])
            self._push_head(freed[~hashed])
        self._num_free += len(freed)

    # ---- the free queue -------------------------------------------------------------------------------

    def _reset_queue(self, live: npt.NDArray[np.int64], room: int = 0) -> None:
        """Rewrite the queue as exactly `live` (in order), with room for `room` more entries at either end."""
        front = max(64, len(live) // 4, room)
        size = max(len(self._queue), front + 2 * (len(live) + room) + 64)
        if size != len(self._queue):
            self._queue_at, self._queue = _int64s(size)
        end = front + len(live)
        self._queue[front:end] = live
        self._pos[live] = np.arange(front, end, dtype=np.int64)
        self._head, self._tail = front, end

    def _compact(self, room: int) -> None:
        window = self._queue[self._head : self._tail]
        live = window[self._pos[window] == np.arange(self._head, self._tail, dtype=np.int64)]
        assert len(live) == self._num_free, "free queue out of step with the free count"
        self._reset_queue(live.copy(), room)

    def _push_tail(self, ids: npt.NDArray[np.int64]) -> None:
        k = len(ids)
        if self._tail + k > len(self._queue):
            self._compact(k)
        tail = self._tail
        self._queue[tail : tail + k] = ids
        self._pos[ids] = np.arange(tail, tail + k, dtype=np.int64)
        self._tail = tail + k

    def _push_head(self, ids: npt.NDArray[np.int64]) -> None:
        k = len(ids)
        if self._head < k:
            self._compact(k)
        head = self._head - k
        self._queue[head : head + k] = ids
        self._pos[ids] = np.arange(head, head + k, dtype=np.int64)
        self._head = head

    def _pop_one(self) -> int:
        """Take the first live entry off the queue's head (the free count is > 0)."""
        queue, pos, head = self._queue_at, self._pos_at, self._head
        block_id = queue[head]
        while pos[block_id] != head:
            head += 1
            block_id = queue[head]
        pos[block_id] = _IN_USE
        self._head = head + 1
        self._num_free -= 1
        return block_id

    def _pop_free(self, n: int) -> npt.NDArray[np.int64]:
        """Take the first `n` live entries off the queue's head (`n` <= the free count)."""
        queue, pos, head, tail = self._queue, self._pos, self._head, self._tail
        width = 2 * n + 16
        while True:
            end = min(head + width, tail)
            window = queue[head:end]
            live = np.flatnonzero(pos[window] == np.arange(head, end, dtype=np.int64))
            if len(live) >= n:
                break
            width *= 4
        taken = live[:n]
        chosen = window[taken]
        pos[chosen] = _IN_USE
        self._head = head + int(taken[-1]) + 1
        self._num_free -= n
        return chosen

    def cache_block(self, block_id: int, block_hash: BlockHash) -> None:
        """Register a full, in-use block under `block_hash` (no-op if the block holds a hash already); if
        another block holds that hash, this one becomes a duplicate, found once the others are evicted."""
        self.cache_blocks([block_id], [block_hash], 0, 1)

    def cache_blocks(
        self, block_ids: Sequence[int], block_hashes: Sequence[BlockHash], start: int, end: int
    ) -> None:
        """`cache_block(block_ids[k], block_hashes[k])` for k in start..end-1, in that order."""
        if end - start == 1:  # a decoding request's block filled: scalar work beats list and array calls
            self._cache_one(block_ids[start], block_hashes[start])
            return
        hashes = self._hash
        cached = self._cached
        dup_of = self._dup_of
        new: list[int] = []
        new_hashes: list[BlockHash] = []
        dups: list[int] = []
        for k in range(start, end):
            block_id = block_ids[k]
            if hashes[block_id] is not None or block_id in dup_of:
                continue
            block_hash = block_hashes[k]
            if block_hash in cached:
                dup_of[block_id] = block_hash
                self._dups.setdefault(block_hash, []).append(block_id)
                dups.append(block_id)
                continue
            hashes[block_id] = block_hash
            cached[block_hash] = block_id
            new.append(block_id)
            new_hashes.append(block_hash)
        if new:
            self._mark_int_cached(new, new_hashes)
            if len(new) == 1:
                self._hashed_at[new[0]] = self._unreused_at[new[0]] = 1
            else:
                self._hashed[new] = self._unreused[new] = True
            self.blocks_cached_total += len(new)
        if dups:
            self._hashed[dups] = True

    def _cache_one(self, block_id: int, block_hash: BlockHash) -> None:
        """`cache_blocks` of one block, the same updates without building lists."""
        if self._hash[block_id] is not None or block_id in self._dup_of:
            return
        if block_hash in self._cached:
            self._dup_of[block_id] = block_hash
            self._dups.setdefault(block_hash, []).append(block_id)
            self._hashed_at[block_id] = 1
            return
        self._hash[block_id] = block_hash
        self._cached[block_hash] = block_id
        if isinstance(block_hash, int):  # _mark_int_cached of one block
            try:
                self._phash_at[block_id] = block_hash
            except OverflowError:
                pass
            else:
                self._int_cached_at[block_id] = 1
        self._hashed_at[block_id] = self._unreused_at[block_id] = 1
        self.blocks_cached_total += 1

    def record_reuse(self, hit: BlockIds, hit_hashes: Sequence[BlockHash] | None = None) -> None:
        """A request's prefix hit on these blocks (each the block its hash is cached in, as `lookup` gives
        them): count the ones reused for the first time. `hit_hashes` (the hashes they were found under) is
        accepted for callers that have them; the blocks' own flags are read."""
        del hit_hashes
        ids = as_block_ids(hit)
        if len(ids) == 0:
            return
        unreused = self._unreused
        first = np.count_nonzero(unreused[ids])
        if first:
            unreused[ids] = False
            self.blocks_reused_total += int(first)

    def log_stored(
        self,
        block_ids: Sequence[int],
        block_hashes: Sequence[BlockHash],
        start: int,
        end: int,
        tokens: Sequence[int],
        session_id: str | None = None,
    ) -> None:
        """Report blocks `start`..`end`-1 of one request (block k: `block_ids[k]`, hash `block_hashes[k]`,
        tokens `tokens[k*block_size:(k+1)*block_size]`) that `cache_block` just registered, as BlockStored
        events, one per run of consecutive registered blocks (a block whose hash was already cached by
        another block is skipped: it is not a new cached hash), naming the request's `session_id`. No-op
        without a sink."""
        sink = self.kv_event_sink
        if sink is None:
            return
        bs = self.block_size
        run_start = start
        for k in range(start, end + 1):
            if k < end and self._hash[block_ids[k]] == block_hashes[k]:
                continue  # registered by this request: extends the run
            if k > run_start:
                parent = block_hashes[run_start - 1] if run_start > 0 else None
                sink(
                    block_stored(
                        list(block_hashes[run_start:k]),
                        parent,
                        list(tokens[run_start * bs : k * bs]),
                        bs,
                        session_id,
                    )
                )
            run_start = k + 1

    def record_query(self, query_tokens: int, hit_tokens: int) -> None:
        self.query_tokens += query_tokens
        self.hit_tokens += hit_tokens

    def reset(self) -> bool:
        """Drop every cached hash (vLLM's reset_prefix_cache); refused (False) while any block is in use."""
        if self._num_free != self.num_blocks:
            return False
        self.version += 1
        self._unreused[:] = False
        self._hashed[:] = False
        self._int_cached[:] = False
        self._cached.clear()
        self._dups.clear()
        self._dup_of.clear()
        self._hash = [None] * self.num_blocks
        if self.kv_event_sink is not None:
            self.kv_event_sink(AllBlocksCleared())
        return True

    def free_order(self) -> list[int]:
        """The free queue, head (next evicted) first (for tests)."""
        window = self._queue[self._head : self._tail]
        live = window[self._pos[window] == np.arange(self._head, self._tail, dtype=np.int64)]
        return cast("list[int]", live.tolist())

    def check_invariants(self, held: Sequence[Sequence[int]] = ()) -> None:
        """Assert internal consistency; `held` lists each live request's blocks (for reference counts)."""
        counts = [0] * self.num_blocks
        for blocks in held:
            for block_id in blocks:
                counts[block_id] += 1
        ref = self._ref.tolist()
        if held:
            assert counts == ref, "reference counts disagree with the requests' blocks"
        order = self.free_order()
        assert len(order) == self._num_free == len(set(order)), "free queue and free count disagree"
        in_queue = set(order)
        for block_id in range(self.num_blocks):
            assert ref[block_id] >= 0, f"block {block_id} has a negative reference count"
            assert (ref[block_id] == 0) == (block_id in in_queue), f"block {block_id} free state"
            assert (ref[block_id] == 0) == self.is_free(block_id), f"block {block_id} queue position"
            hashed = self._hash[block_id] is not None or block_id in self._dup_of
            assert hashed == bool(self._hashed[block_id]), f"block {block_id} hash flag"
            assert not self._unreused[block_id] or self._hash[block_id] is not None, f"block {block_id} reuse"
            if self._int_cached[block_id]:
                assert self._hash[block_id] == int(self._phash[block_id]), f"block {block_id} int hash"
        for block_hash, block_id in self._cached.items():
            assert self._hash[block_id] == block_hash, f"block {block_id} hash mismatch"
        assert sum(map(len, self._dups.values())) == len(self._dup_of), "duplicate tables disagree"
        for block_hash, dups in self._dups.items():
            assert dups and block_hash in self._cached, "a duplicate of an uncached hash"
            for block_id in dups:
                assert self._dup_of[block_id] == block_hash and self._hash[block_id] is None
