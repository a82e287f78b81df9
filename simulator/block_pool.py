"""A paged KV cache with prefix caching: fixed blocks, reference counts, LRU eviction of freed blocks.

Contract (vLLM's v1 block pool):
- A block is in use while its reference count is > 0. Free blocks sit in one queue in the order they were
  freed; new blocks are taken from its head, so the least recently freed block is reused (and, if it held a
  cached hash, evicted) first.
- Only full blocks are cached (`cache_block`); a freed cached block keeps its hash and still gives hits until
  it is reused. If two blocks get the same hash, the first one registered stays the cached one.
- `lookup` returns the longest run of cached blocks matching a hash chain from its start, without taking
  references; `touch` takes them (a hit on a free block pulls it out of the free queue).
- The pool never raises on exhaustion: `allocate` returns None when too few blocks are free.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from simulator.block_hash import BlockHash


class BlockPool:
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
        self._cached: dict[BlockHash, int] = {}
        self.num_evictions = 0
        self.query_tokens = 0
        self.hit_tokens = 0

    @property
    def num_free(self) -> int:
        """Blocks that `allocate` can hand out (free, cached or not)."""
        return len(self._free)

    @property
    def num_cached(self) -> int:
        """Blocks that currently hold a cached hash (in use or free)."""
        return len(self._cached)

    @property
    def usage(self) -> float:
        """Fraction of blocks in use (referenced by a request), as vLLM's kv_cache_usage_perc."""
        return 1.0 - len(self._free) / self.num_blocks

    def ref_count(self, block_id: int) -> int:
        return self._ref_cnt[block_id]

    def is_free(self, block_id: int) -> bool:
        return block_id in self._free

    def lookup(self, block_hashes: Iterable[BlockHash]) -> list[int]:
        """Ids of the cached blocks matching the longest prefix of `block_hashes`; takes no references.
        Stops pulling from `block_hashes` at the first miss, so a lazy hash generator stops hashing too."""
        cached = self._cached
        hit: list[int] = []
        for block_hash in block_hashes:
            block_id = cached.get(block_hash)
            if block_id is None:
                break
            hit.append(block_id)
        return hit

    def num_evictable(self, block_ids: Iterable[int]) -> int:
        """How many of `block_ids` are free now, i.e. would leave the free queue when touched."""
        free = self._free
        return sum(1 for b in block_ids if b in free)

    def touch(self, block_ids: Iterable[int]) -> None:
        """Take one reference on each block (a prefix hit)."""
        ref = self._ref_cnt
        free = self._free
        for block_id in block_ids:
            if ref[block_id] == 0:
                del free[block_id]
            ref[block_id] += 1

    def allocate(self, n: int) -> list[int] | None:
        """`n` fresh blocks with one reference each, evicting cached ones LRU; None if fewer are free."""
        if n > len(self._free):
            return None
        free = self._free
        out: list[int] = []
        for _ in range(n):
            block_id, _ = free.popitem(last=False)
            block_hash = self._hash[block_id]
            if block_hash is not None:
                self._hash[block_id] = None
                if self._cached.get(block_hash) == block_id:
                    del self._cached[block_hash]
                    self.num_evictions += 1
            self._ref_cnt[block_id] = 1
            out.append(block_id)
        return out

    def free(self, block_ids: Iterable[int]) -> None:
        """Drop one reference on each block; blocks reaching zero join the free queue's tail in this order.
        Callers pass a request's blocks last-first, so its tail is evicted before its shared prefix."""
        ref = self._ref_cnt
        free = self._free
        for block_id in block_ids:
            ref[block_id] -= 1
            if ref[block_id] == 0:
                free[block_id] = None

    def cache_block(self, block_id: int, block_hash: BlockHash) -> None:
        """Register a full, in-use block under `block_hash` (no-op if that hash is already cached)."""
        if self._hash[block_id] is not None or block_hash in self._cached:
            return
        self._hash[block_id] = block_hash
        self._cached[block_hash] = block_id

    def record_query(self, query_tokens: int, hit_tokens: int) -> None:
        self.query_tokens += query_tokens
        self.hit_tokens += hit_tokens

    def reset(self) -> bool:
        """Drop every cached hash (vLLM's reset_prefix_cache); refused (False) while any block is in use."""
        if len(self._free) != self.num_blocks:
            return False
        self._cached.clear()
        self._hash = [None] * self.num_blocks
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
