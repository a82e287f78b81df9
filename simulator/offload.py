"""A CPU KV offload tier, modelled on vLLM's native offloading (`--kv-offloading-backend native
--kv-offloading-size GiB`, the OffloadingConnector with its CPU LRU manager, vllm/v1/kv_offload/).

Contract (sans-IO, virtual time; docs/offload.md says where it simplifies vLLM):
- The pool holds `num_blocks` full KV blocks keyed by their prefix-cache hash, in LRU order. `offer(hashes,
  at)` is what the engine hands over as a request's prompt blocks are computed: a hash already in the pool
  is refreshed (most recently used), a new one is stored, evicting the least recently used block that no
  load is reading; when every block is being read the store is skipped (vLLM's prepare_store fails too).
- Transfers are serialized per direction over the host link (`link_bytes_per_s`, GPU->CPU for stores and
  CPU->GPU for loads, each its own queue) and take `bytes_per_block / link_bytes_per_s` per block. A store
  offered at `at` starts when the link is free; the block is loadable once its store has completed.
- `lookup(hashes)` counts the leading hashes present (stored or still being stored). `load(hashes, now)`
  reads them: it pins them (not evictable) until the load is done, refreshes them, and returns when the
  load completes: after the link is free and after each block's own store. `release(now)` unpins the loads
  done by `now`; `next_load_done()` is the earliest pending load's end (None when none is pending), the
  time at which something waiting for a load can change, for the caller's event loop.
- Counters: blocks stored, loaded, evicted and stores skipped.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from simulator.block_hash import BlockHash

GIB = 1 << 30  # vLLM reads --kv-offloading-size in GiB: size * (1 << 30) bytes


def cpu_blocks_for(gib: float, bytes_per_block: int) -> int:
    """Blocks of `bytes_per_block` that fit in `gib` GiB of host memory (vLLM: cpu_bytes_to_use // bytes per
    block, summed over tensor-parallel ranks)."""
    if not (gib > 0 and math.isfinite(gib)):
        raise ValueError(f"kv offload size must be positive GiB (and finite), got {gib}")
    if bytes_per_block <= 0:
        raise ValueError(f"bytes per KV block must be positive, got {bytes_per_block}")
    return int(gib * GIB) // bytes_per_block


class CpuOffloadTier:
    """A host-memory LRU pool of KV blocks and its two transfer queues; see the module contract."""

    def __init__(self, num_blocks: int, *, bytes_per_block: int, link_bytes_per_s: float) -> None:
        if num_blocks <= 0:
            raise ValueError(f"CPU offload pool needs at least one block, got {num_blocks}")
        if not link_bytes_per_s > 0:
            raise ValueError(f"host link bandwidth must be positive, got {link_bytes_per_s}")
        self.num_blocks = num_blocks
        self.block_transfer_s = bytes_per_block / link_bytes_per_s
        self._ready_at: OrderedDict[BlockHash, float] = OrderedDict()  # hash -> store done; LRU first
        self._pins: dict[BlockHash, int] = {}  # hash -> loads reading it
        self._loads: list[tuple[float, int, list[BlockHash]]] = []  # heap of (done, seq, hashes)
        self._load_seq = 0
        self._store_free_at = 0.0
        self._load_free_at = 0.0
        self.blocks_stored = 0
        self.blocks_loaded = 0
        self.blocks_evicted = 0
        self.stores_skipped = 0

    @property
    def num_used(self) -> int:
        return len(self._ready_at)

    @property
    def usage(self) -> float:
        return len(self._ready_at) / self.num_blocks

    def __contains__(self, block_hash: BlockHash) -> bool:
        return block_hash in self._ready_at

    def offer(self, block_hashes: Iterable[BlockHash], at: float) -> int:
        """Store the blocks not in the pool yet (starting at `at`), refresh the others; returns how many were
        stored."""
        pool = self._ready_at
        stored = 0
        for block_hash in block_hashes:
            if block_hash in pool:
                pool.move_to_end(block_hash)
                continue
            if len(pool) >= self.num_blocks and not self._evict_one():
                self.stores_skipped += 1
                continue
            start = max(at, self._store_free_at)
            self._store_free_at = start + self.block_transfer_s
            pool[block_hash] = self._store_free_at
            stored += 1
        self.blocks_stored += stored
        return stored

    def _evict_one(self) -> bool:
        pins = self._pins
        for block_hash in self._ready_at:  # oldest first; pinned blocks are few (loads in flight)
            if block_hash not in pins:
                del self._ready_at[block_hash]
                self.blocks_evicted += 1
                return True
        return False

    def lookup(self, block_hashes: Iterable[BlockHash]) -> int:
        """How many leading `block_hashes` are in the pool (stops pulling at the first miss)."""
        pool = self._ready_at
        n = 0
        for block_hash in block_hashes:
            if block_hash not in pool:
                break
            n += 1
        return n

    def load(self, block_hashes: Sequence[BlockHash], now: float) -> float:
        """Start loading these pooled blocks to the GPU at `now`; returns when the load is done."""
        pool, pins = self._ready_at, self._pins
        start = max(now, self._load_free_at)
        for block_hash in block_hashes:
            start = max(start, pool[block_hash])  # a block still being stored is read after its store
            pool.move_to_end(block_hash)
            pins[block_hash] = pins.get(block_hash, 0) + 1
        done = start + len(block_hashes) * self.block_transfer_s
        self._load_free_at = done
        heapq.heappush(self._loads, (done, self._load_seq, list(block_hashes)))
        self._load_seq += 1
        self.blocks_loaded += len(block_hashes)
        return done

    def release(self, now: float) -> None:
        """Unpin the blocks of every load done by `now`."""
        loads, pins = self._loads, self._pins
        while loads and loads[0][0] <= now:
            _, _, hashes = heapq.heappop(loads)
            for block_hash in hashes:
                left = pins[block_hash] - 1
                if left:
                    pins[block_hash] = left
                else:
                    del pins[block_hash]

    def next_load_done(self) -> float | None:
        return self._loads[0][0] if self._loads else None

    def reset(self) -> None:
        """Forget every stored block not being read (vLLM resets the offload cache with the prefix cache)."""
        for block_hash in [h for h in self._ready_at if h not in self._pins]:
            del self._ready_at[block_hash]

    def check_invariants(self) -> None:
        assert len(self._ready_at) <= self.num_blocks, "CPU pool over capacity"
        pinned = {h for _, _, hashes in self._loads for h in hashes}
        assert pinned == set(self._pins), "pins disagree with the loads in flight"
        assert all(h in self._ready_at for h in pinned), "a block being loaded was evicted"
