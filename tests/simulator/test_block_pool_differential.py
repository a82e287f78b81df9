"""The array-backed block pool behaves exactly as the plain LRU-queue pool it replaced (reference_block_pool):
random requests allocate, cache (duplicates included), hit, touch, free and reset on both, and every answer
and counter, and the free queue's order, agree after each operation."""

from __future__ import annotations

import random
from array import array

import numpy as np
import pytest

from simulator.block_pool import BlockPool
from tests.simulator.reference_block_pool import ReferenceBlockPool


def same_state(pool: BlockPool, ref: ReferenceBlockPool) -> None:
    assert pool.num_free == ref.num_free
    assert pool.free_order() == list(ref._free)  # the LRU order: head, next evicted, first
    assert pool.num_cached == ref.num_cached and pool._cached == ref._cached
    assert (pool.num_evictions, pool.blocks_cached_total, pool.blocks_reused_total, pool.version) == (
        ref.num_evictions,
        ref.blocks_cached_total,
        ref.blocks_reused_total,
        ref.version,
    )
    assert pool._ref.tolist() == ref._ref_cnt


@pytest.mark.parametrize("seed", range(12))
def test_random_requests_give_the_same_answers_and_queue_order_as_the_reference_pool(seed: int) -> None:
    rng = random.Random(seed)
    num_blocks = rng.choice([8, 17, 40, 120])
    pool, ref = BlockPool(num_blocks, 4), ReferenceBlockPool(num_blocks, 4)
    # a few conversations whose chains share prefixes (a common system prompt), so hits and duplicates happen
    chains = [
        [100_000 + k for k in range(3)] + [c * 1000 + k for k in range(rng.randint(1, 30))] for c in range(6)
    ]
    held: list[list[int]] = []  # each live "request": its blocks, a prefix hit and then fresh ones
    for _ in range(400):
        op = rng.random()
        if op < 0.45:  # admit a request on a prefix of a chain
            chain = rng.choice(chains)[: rng.randint(1, 33)]
            hit = pool.lookup(list(chain))
            assert hit == ref.lookup(iter(chain))  # the lazy (generator) path of the reference
            assert pool.num_evictable(hit) == ref.num_evictable(hit)
            need = len(chain) - len(hit) + rng.randint(0, 2)  # plus a partial block, sometimes
            if need + pool.num_evictable(hit) > pool.num_free:
                assert pool.allocate(need + len(hit) + pool.num_free) is None
                continue
            pool.touch(hit)
            ref.touch(hit)
            pool.record_reuse(hit, list(chain))
            ref.record_reuse(hit, list(chain))
            fresh = pool.allocate(need)
            assert fresh == ref.allocate(need)
            assert fresh is not None
            blocks = hit + fresh
            full = min(len(chain), len(blocks))
            if rng.random() < 0.8:  # cache the full blocks (some already hit: a no-op for them)
                pool.cache_blocks(blocks, chain, len(hit), full)
                ref.cache_blocks(blocks, chain, len(hit), full)
            held.append(blocks)
        elif op < 0.9 and held:  # a request ends: its blocks freed last-first
            blocks = held.pop(rng.randrange(len(held)))
            pool.free(reversed(blocks))
            ref.free(reversed(blocks))
        elif op < 0.95:  # a retention-like extra reference on a live request's blocks, dropped later
            if held:
                blocks = rng.choice(held)
                pool.touch(blocks)
                ref.touch(blocks)
                held.append(list(blocks))
        else:
            assert pool.reset() == ref.reset()
        same_state(pool, ref)
        pool.check_invariants(held)
    for blocks in held:
        pool.free(blocks[::-1])
        ref.free(reversed(blocks))
    same_state(pool, ref)
    assert pool.num_free == num_blocks


def test_the_free_queue_is_compacted_without_changing_its_order() -> None:
    pool, ref = BlockPool(5, 4), ReferenceBlockPool(5, 4)
    for k in range(500):  # many touches and frees leave stale entries until the array is rewritten
        blocks = pool.allocate(2)
        assert blocks == ref.allocate(2) and blocks is not None
        pool.cache_block(blocks[0], k)
        ref.cache_block(blocks[0], k)
        pool.free(blocks)
        ref.free(blocks)
        hit = pool.lookup([k])
        pool.touch(hit)
        ref.touch(hit)
        pool.free(hit)
        ref.free(hit)
        same_state(pool, ref)
    pool.check_invariants()


@pytest.mark.parametrize("seed", range(6))
def test_lookup_from_candidates_equals_a_plain_lookup_whatever_the_candidates(seed: int) -> None:
    # int hashes (the "builtin" algorithm's), chains that share a prefix, evictions, duplicates and resets;
    # the candidates are a chain's blocks from some earlier time, some other chain's, or random ids
    rng = random.Random(seed)
    pool = BlockPool(60, 4)
    chains = [
        [10_000 + k for k in range(4)] + [c * 1000 + k for k in range(rng.randint(1, 40))] for c in range(5)
    ]
    chains.append([2**62 + k for k in range(8)])  # large 64-bit values
    last: dict[int, list[int]] = {}
    held: list[list[int]] = []
    checked = 0
    for _ in range(500):
        c = rng.randrange(len(chains))
        chain = chains[c]
        num = rng.randint(0, len(chain))
        expected = pool.lookup(chain[:num])
        for candidates in (
            last.get(c, []),
            last.get(rng.randrange(len(chains)), []),
            rng.sample(range(60), 10),
        ):
            got = pool.lookup_from(chain, num, np.array(candidates, np.int64))
            assert got.tolist() == expected
            # the discrete-event clients' chains come as an array("q"), viewed instead of converted
            got = pool.lookup_from(array("q", chain), num, np.array(candidates, np.int64))
            assert got.tolist() == expected
            assert pool.lookup(array("q", chain[:num])) == expected
            checked += len(candidates) > 0
        hit = pool.lookup(chain)
        need = len(chain) - len(hit)
        if need + pool.num_evictable(hit) <= pool.num_free and rng.random() < 0.7:
            pool.touch(hit)
            fresh = pool.allocate(need) or []
            blocks = hit + fresh
            if rng.random() < 0.3 and fresh:  # another block already caches this hash: a duplicate
                pool.cache_blocks(blocks, chain, len(hit), len(blocks) - 1)
            else:
                pool.cache_blocks(blocks, chain, len(hit), len(blocks))
            last[c] = list(blocks)
            held.append(blocks)
        if held and rng.random() < 0.6:
            pool.free(held.pop(rng.randrange(len(held)))[::-1])
        if not held and rng.random() < 0.05:
            assert pool.reset()
        pool.check_invariants(held)
    assert checked > 100
