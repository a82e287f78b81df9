"""The block pool: reference counts, LRU order of freed blocks, eviction, hits on free blocks, reset."""

from __future__ import annotations

import pytest

from simulator.block_hash import first_block_extra_keys, hash_function, none_hash
from simulator.block_pool import BlockPool


def test_allocate_takes_free_blocks_in_order_and_refuses_when_short() -> None:
    pool = BlockPool(4, 16)
    assert pool.allocate(3) == [0, 1, 2]
    assert pool.num_free == 1 and pool.usage == pytest.approx(0.75)
    assert pool.allocate(2) is None
    assert pool.num_free == 1  # a refused allocation takes nothing


def test_freed_cached_blocks_still_hit_and_are_evicted_least_recently_freed_first() -> None:
    pool = BlockPool(4, 16)
    a, b = pool.allocate(2) or [], pool.allocate(2) or []
    for block_id, h in zip(a + b, [b"a0", b"a1", b"b0", b"b1"], strict=True):
        pool.cache_block(block_id, h)
    pool.free(reversed(a))  # a request frees its tail first
    pool.free(reversed(b))
    assert pool.usage == 0.0
    assert pool.lookup([b"a0", b"a1"]) == a and pool.lookup([b"b0", b"b1"]) == b
    assert pool.allocate(1) == [a[1]]  # a's tail was freed first, so it goes first
    assert pool.num_evictions == 1
    assert pool.lookup([b"a0", b"a1"]) == [a[0]]  # the chain now stops at the evicted block
    assert pool.lookup([b"b0", b"b1"]) == b


def test_a_hit_on_a_free_block_takes_it_out_of_the_free_queue() -> None:
    pool = BlockPool(2, 16)
    (block,) = pool.allocate(1) or []
    pool.cache_block(block, b"x")
    pool.free([block])
    assert pool.num_evictable([block]) == 1
    pool.touch([block])
    assert pool.ref_count(block) == 1 and not pool.is_free(block)
    assert pool.allocate(1) == [1]
    assert pool.allocate(1) is None  # the touched block is not evicted
    assert pool.lookup([b"x"]) == [block]


def test_a_duplicate_hash_is_found_in_its_first_block_then_in_the_duplicate_until_both_are_evicted() -> None:
    pool = BlockPool(3, 16)
    first, second = pool.allocate(2) or []
    pool.cache_block(first, b"same")
    pool.cache_block(second, b"same")
    assert pool.lookup([b"same"]) == [first] and pool.num_cached == 1
    pool.free([first, second])  # free queue: the untouched block, first, second
    pool.check_invariants()
    assert pool.allocate(2) is not None  # evicts `first`: vLLM still finds the hash in `second`
    assert pool.lookup([b"same"]) == [second] and pool.num_evictions == 0
    pool.check_invariants()
    assert pool.allocate(1) == [second]
    assert pool.lookup([b"same"]) == [] and pool.num_evictions == 1 and pool.num_cached == 0
    pool.check_invariants()


def test_freed_uncached_blocks_are_reused_first_and_cached_ones_evicted_lru_tail_first() -> None:
    pool = BlockPool(4, 16)
    a = pool.allocate(3) or []
    pool.cache_block(a[0], b"h0")
    pool.cache_block(a[1], b"h1")  # a[2] is a partial block: no hash
    pool.free(reversed(a))  # the queue: a[2] (at the head), the untouched block, a[1], a[0]
    pool.check_invariants()
    assert pool.allocate(2) == [a[2], 3] and pool.lookup([b"h0", b"h1"]) == a[:2] and pool.num_evictions == 0
    assert pool.allocate(1) == [a[1]] and pool.lookup([b"h0", b"h1"]) == a[:1] and pool.num_evictions == 1
    pool.check_invariants()


def test_evicting_a_duplicate_leaves_the_first_block_cached() -> None:
    pool = BlockPool(2, 16)
    first, second = pool.allocate(2) or []
    pool.cache_block(first, b"same")
    pool.cache_block(second, b"same")
    pool.free([second, first])
    assert pool.allocate(1) == [second] and pool.lookup([b"same"]) == [first]
    pool.check_invariants()
    assert pool.reset() is False
    pool.free([second])
    assert pool.reset() is True and pool.lookup([b"same"]) == []
    pool.check_invariants()


def test_reset_is_refused_while_blocks_are_in_use() -> None:
    pool = BlockPool(2, 16)
    blocks = pool.allocate(1) or []
    pool.cache_block(blocks[0], b"h")
    assert pool.reset() is False and pool.lookup([b"h"]) == blocks
    pool.free(blocks)
    assert pool.reset() is True and pool.lookup([b"h"]) == []
    pool.check_invariants()


@pytest.mark.parametrize("algo", ["sha256", "sha256_cbor", "builtin"])
def test_block_hashes_chain_and_salt_changes_only_through_the_first_block(algo: str) -> None:
    h = hash_function(algo)
    root = none_hash(algo)
    tokens = list(range(16))
    plain = h(root, tokens, first_block_extra_keys(None))
    salted = h(root, tokens, first_block_extra_keys("tenant-a"))
    assert plain != salted and plain == h(root, tokens, None)
    assert h(plain, tokens, None) != h(salted, tokens, None)  # the salt reaches later blocks via the parent
    assert h(plain, tokens, None) != plain
    with pytest.raises(ValueError, match="known"):
        hash_function("md5")


def test_useful_kv_counts_cached_blocks_reused_before_eviction() -> None:
    pool = BlockPool(3, 16)
    a, b = pool.allocate(2) or []
    pool.cache_block(a, b"a")
    pool.cache_block(b, b"b")
    pool.free([b, a])
    hit = pool.lookup([b"a"])
    pool.touch(hit)
    pool.record_reuse(hit)
    pool.record_reuse(hit)  # a second hit on the same hash is not a second useful block
    assert pool.allocate(2) is not None  # evicts b (never reused) and the empty block
    assert (pool.blocks_cached_total, pool.blocks_reused_total) == (2, 1)
