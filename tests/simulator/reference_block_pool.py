"""The block pool as it was before its free queue moved to arrays (main @ f2c8654), kept as the reference the
differential test (test_block_pool_differential.py) compares `simulator.block_pool.BlockPool` with.

A paged KV cache with prefix caching: fixed blocks, reference counts, LRU eviction of freed blocks.

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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from simulator.block_hash import BlockHash
from simulator.kv_events import AllBlocksCleared, KvEvent, block_removed, block_stored


class ReferenceBlockPool:
    """`num_blocks` blocks of `block_size` tokens. Counts evictions and prefix-cache queries/hits."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"block pool needs positive sizes, got {num_blocks} blocks of {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._ref_cnt = [0] * num_blocks
        self._hash: list[BlockHash | None] = [None] * num_blocks
        # an O(1) LRU queue that can also drop a block from its middle (a hit on a free cached block)
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
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
        self._unreused: set[BlockHash] = set()
        self.kv_event_sink: Callable[[KvEvent], None] | None = None  # KV events off while None

    @property
    def num_free(self) -> int:
        """Blocks that `allocate` can hand out (free, cached or not)."""
        return len(self._free)

    @property
    def num_cached(self) -> int:
        """Distinct hashes cached now (in use or free; a duplicate block adds none)."""
        return len(self._cached)

    @property
    def usage(self) -> float:
        """Fraction of blocks in use (referenced by a request), as vLLM's kv_cache_usage_perc."""
        return 1.0 - len(self._free) / self.num_blocks

    def ref_count(self, block_id: int) -> int:
        return self._ref_cnt[block_id]

    def is_free(self, block_id: int) -> bool:
        return block_id in self._free

    def is_cached(self, block_hash: BlockHash) -> bool:
        return block_hash in self._cached

    def lookup(self, block_hashes: Iterable[BlockHash]) -> list[int]:
        """Ids of the cached blocks matching the longest prefix of `block_hashes`; takes no references.
        Stops pulling from `block_hashes` at the first miss, so a lazy hash generator stops hashing too."""
        cached = self._cached
        if isinstance(block_hashes, list):  # all hashes at hand: look them all up at C speed, then cut
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

    def num_evictable(self, block_ids: Iterable[int]) -> int:
        """How many of `block_ids` (distinct, as a prefix hit's are) are free now, i.e. would leave the free
        queue when touched."""
        return len(self._free.keys() & block_ids)

    def touch(self, block_ids: Sequence[int]) -> None:
        """Take one reference on each block (a prefix hit: distinct blocks)."""
        self.version += 1
        ref = self._ref_cnt
        free = self._free
        for block_id in block_ids:
            count = ref[block_id]
            if count == 0:
                del free[block_id]
            ref[block_id] = count + 1

    def allocate(self, n: int) -> list[int] | None:
        """`n` fresh blocks with one reference each, evicting cached ones LRU; None if fewer are free."""
        if n > len(self._free):
            return None
        popitem = self._free.popitem
        out = [popitem(last=False)[0] for _ in range(n)]
        hashes = self._hash
        cached = self._cached
        ref = self._ref_cnt
        dup_of = self._dup_of
        evicted: list[BlockHash] | None = None if self.kv_event_sink is None else []
        for block_id in out:
            ref[block_id] = 1
            block_hash = hashes[block_id]
            if block_hash is not None:
                hashes[block_id] = None
                if cached.get(block_hash) == block_id and not (self._dups and self._promote_dup(block_hash)):
                    del cached[block_hash]
                    self._unreused.discard(block_hash)
                    self.num_evictions += 1
                    if evicted is not None:
                        evicted.append(block_hash)
            elif dup_of and block_id in dup_of:
                dup_hash = dup_of.pop(block_id)
                dups = self._dups[dup_hash]
                dups.remove(block_id)
                if not dups:
                    del self._dups[dup_hash]
        if evicted and self.kv_event_sink is not None:
            self.kv_event_sink(block_removed(evicted))
        return out

    def _promote_dup(self, block_hash: BlockHash) -> bool:
        """The cached block of `block_hash` is being evicted: its oldest duplicate, if any, takes the hash."""
        dups = self._dups.get(block_hash)
        if not dups:
            return False
        block_id = dups.pop(0)
        if not dups:
            del self._dups[block_hash]
        del self._dup_of[block_id]
        self._hash[block_id] = block_hash
        self._cached[block_hash] = block_id
        return True

    def free(self, block_ids: Iterable[int]) -> None:
        """Drop one reference on each block; of those reaching zero, the cached ones join the free queue's
        tail in this order and the others its head, the first of them becoming the head. Callers pass a
        request's blocks last-first, so its tail is evicted before its shared prefix."""
        self.version += 1
        ref = self._ref_cnt
        free = self._free
        hashes = self._hash
        dup_of = self._dup_of
        uncached: list[int] = []
        for block_id in block_ids:
            count = ref[block_id]
            if count != 1:
                ref[block_id] = count - 1
            else:
                ref[block_id] = 0
                if hashes[block_id] is None and block_id not in dup_of:
                    uncached.append(block_id)
                else:
                    free[block_id] = None
        for block_id in reversed(uncached):
            free[block_id] = None
            free.move_to_end(block_id, last=False)

    def cache_block(self, block_id: int, block_hash: BlockHash) -> None:
        """Register a full, in-use block under `block_hash` (no-op if the block holds a hash already); if
        another block holds that hash, this one becomes a duplicate, found once the others are evicted."""
        if self._hash[block_id] is not None or block_id in self._dup_of:
            return
        if block_hash in self._cached:
            self._dup_of[block_id] = block_hash
            self._dups.setdefault(block_hash, []).append(block_id)
            return
        self._hash[block_id] = block_hash
        self._cached[block_hash] = block_id
        self.blocks_cached_total += 1
        self._unreused.add(block_hash)

    def cache_blocks(
        self, block_ids: Sequence[int], block_hashes: Sequence[BlockHash], start: int, end: int
    ) -> None:
        """`cache_block(block_ids[k], block_hashes[k])` for k in start..end-1, in that order."""
        hashes = self._hash
        cached = self._cached
        dup_of = self._dup_of
        unreused = self._unreused
        new = 0
        for k in range(start, end):
            block_id = block_ids[k]
            if hashes[block_id] is not None or block_id in dup_of:
                continue
            block_hash = block_hashes[k]
            if block_hash in cached:
                dup_of[block_id] = block_hash
                self._dups.setdefault(block_hash, []).append(block_id)
                continue
            hashes[block_id] = block_hash
            cached[block_hash] = block_id
            unreused.add(block_hash)
            new += 1
        self.blocks_cached_total += new

    def record_reuse(self, hit: Sequence[int], hit_hashes: Sequence[BlockHash] | None = None) -> None:
        """A request's prefix hit on these blocks: count the ones reused for the first time. `hit_hashes`:
        the hashes `lookup` found them under, if at hand (then the blocks themselves are not read)."""
        unreused = self._unreused
        if unreused:
            hashes = map(self._hash.__getitem__, hit) if hit_hashes is None else hit_hashes[: len(hit)]
            first_reuses = unreused.intersection(hashes)
            unreused -= first_reuses
            self.blocks_reused_total += len(first_reuses)

    def log_stored(
        self,
        block_ids: Sequence[int],
        block_hashes: Sequence[BlockHash],
        start: int,
        end: int,
        tokens: Sequence[int],
    ) -> None:
        """Report blocks `start`..`end`-1 of one request (block k: `block_ids[k]`, hash `block_hashes[k]`,
        tokens `tokens[k*block_size:(k+1)*block_size]`) that `cache_block` just registered, as BlockStored
        events, one per run of consecutive registered blocks (a block whose hash was already cached by
        another block is skipped: it is not a new cached hash). No-op without a sink."""
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
                        list(block_hashes[run_start:k]), parent, list(tokens[run_start * bs : k * bs]), bs
                    )
                )
            run_start = k + 1

    def record_query(self, query_tokens: int, hit_tokens: int) -> None:
        self.query_tokens += query_tokens
        self.hit_tokens += hit_tokens

    def reset(self) -> bool:
        """Drop every cached hash (vLLM's reset_prefix_cache); refused (False) while any block is in use."""
        if len(self._free) != self.num_blocks:
            return False
        self.version += 1
        self._unreused.clear()
        self._cached.clear()
        self._dups.clear()
        self._dup_of.clear()
        self._hash = [None] * self.num_blocks
        if self.kv_event_sink is not None:
            self.kv_event_sink(AllBlocksCleared())
        return True

    def check_invariants(self, held: Sequence[Sequence[int]] = ()) -> None:
        """Assert internal consistency; `held` lists each live request's blocks (for reference counts)."""
        counts = [0] * self.num_blocks
        for blocks in held:
            for block_id in blocks:
                counts[block_id] += 1
        if held:
            assert counts == self._ref_cnt, "reference counts disagree with the requests' blocks"
        for block_id in range(self.num_blocks):
            assert (self._ref_cnt[block_id] == 0) == (block_id in self._free), f"block {block_id} free state"
        for block_hash, block_id in self._cached.items():
            assert self._hash[block_id] == block_hash, f"block {block_id} hash mismatch"
        assert sum(map(len, self._dups.values())) == len(self._dup_of), "duplicate tables disagree"
        for block_hash, dups in self._dups.items():
            assert dups and block_hash in self._cached, "a duplicate of an uncached hash"
            for block_id in dups:
                assert self._dup_of[block_id] == block_hash and self._hash[block_id] is None
