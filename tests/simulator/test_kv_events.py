"""KV-cache events: the block pool's event log, and a replica publishing them over ZMQ in vLLM's wire format,
decoded here with vLLM's own struct declarations (vllm/distributed/kv_events.py), not the simulator's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import msgspec
import pytest
import zmq
import zmq.asyncio

from simulator.block_hash import hash_function, none_hash
from simulator.block_pool import BlockPool
from simulator.kv_events import AllBlocksCleared as SimCleared
from simulator.kv_events import BlockRemoved as SimRemoved
from simulator.kv_events import BlockStored as SimStored
from simulator.kv_events import KvEvent
from simulator.kv_publisher import KvEventPublisher, binds, replica_endpoint
from simulator.server import ReplicaFleet, start_fleet

# ---- vLLM's declarations, as a subscriber of a real vLLM decodes them --------------------------------------


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


class KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):
    pass


class BlockStored(KVCacheEvent):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[int]
    medium: str | None
    group_idx: int | None = None


class AllBlocksCleared(KVCacheEvent):
    pass


class KVEventBatch(EventBatch):
    events: list[BlockStored | BlockRemoved | AllBlocksCleared]


DECODER = msgspec.msgpack.Decoder(KVEventBatch)
WAIT_S = 10.0  # bound on every wait for a message or a subscription


def wire_hash(block_hash: bytes | int) -> int:
    """vLLM's default external form: the digest's last 8 bytes, big-endian (an int modulo 2**64)."""
    if isinstance(block_hash, int):
        return block_hash % 2**64
    return int.from_bytes(block_hash[-8:], "big")


def chain(tokens: list[int], block_size: int, algo: str = "sha256") -> list[bytes | int]:
    """The block hashes of `tokens`' full blocks, as the engine computes them (no salt)."""
    hash_fn = hash_function(algo)
    parent = none_hash(algo)
    out: list[bytes | int] = []
    for k in range(len(tokens) // block_size):
        parent = hash_fn(parent, tokens[k * block_size : (k + 1) * block_size], None)
        out.append(parent)
    return out


# ---- the pool's event log (sans-IO) ------------------------------------------------------------------------


def replay(events: list[KvEvent], cached: set[int]) -> None:
    for ev in events:
        if isinstance(ev, SimStored):
            cached.update(ev.block_hashes)
        elif isinstance(ev, SimRemoved):
            assert set(ev.block_hashes) <= cached, "removed a hash that was never stored"
            cached.difference_update(ev.block_hashes)
        else:
            cached.clear()


def test_pool_logs_runs_of_new_hashes_evictions_and_reset() -> None:
    pool = BlockPool(num_blocks=6, block_size=2)
    events: list[KvEvent] = []
    pool.kv_event_sink = events.append
    tokens = [1, 2, 3, 4, 5, 6]
    hashes: list[bytes | int] = [b"h0", b"h1", b"h2"]
    a = pool.allocate(3)
    assert a is not None
    for block_id, h in zip(a, hashes, strict=True):
        pool.cache_block(block_id, h)
    pool.log_stored(a, hashes, 0, 3, tokens)
    assert events == [SimStored([*map(wire_hash, hashes)], None, tokens, 2, None, "GPU", None, group_idx=0)]

    # a second request: its block 1 duplicates a cached hash, so only block 2 is new, chained to block 1
    b = pool.allocate(3)
    assert b is not None
    other: list[bytes | int] = [b"x0", b"h1", b"x2"]
    for block_id, h in zip(b, other, strict=True):
        pool.cache_block(block_id, h)
    pool.log_stored(b, other, 0, 3, [9, 9, 3, 4, 8, 8])
    assert events[1:] == [
        SimStored([wire_hash(b"x0")], None, [9, 9], 2, None, "GPU", None, group_idx=0),
        SimStored([wire_hash(b"x2")], wire_hash(b"h1"), [8, 8], 2, None, "GPU", None, group_idx=0),
    ]

    pool.free(reversed(a))
    pool.free(reversed(b))
    del events[:]
    # the first request's blocks were freed first, so they go first; h1 stays cached in its duplicate
    assert pool.allocate(3) is not None
    assert events == [SimRemoved([wire_hash(b"h2"), wire_hash(b"h0")], "GPU", group_idx=0)]
    assert pool.lookup([b"h1"]) == [b[1]]


def test_replaying_the_events_gives_the_cached_hashes_under_random_churn() -> None:
    import random

    rng = random.Random(7)
    pool = BlockPool(num_blocks=16, block_size=1)
    events: list[KvEvent] = []
    pool.kv_event_sink = events.append
    held: list[list[int]] = []
    seen: dict[int, bytes | int] = {}  # wire hash -> the engine's hash
    for _ in range(400):
        if held and rng.random() < 0.5:
            pool.free(reversed(held.pop(rng.randrange(len(held)))))
            continue
        n = rng.randint(1, 4)
        blocks = pool.allocate(n)
        if blocks is None:
            continue
        tokens = [rng.randint(0, 3) for _ in range(n)]  # few values: duplicate hashes are common
        hashes: list[bytes | int] = chain(tokens, 1, "builtin")
        for block_id, h in zip(blocks, hashes, strict=True):
            pool.cache_block(block_id, h)
        pool.log_stored(blocks, hashes, 0, n, tokens)
        held.append(blocks)
        seen.update((wire_hash(h), h) for h in hashes)
    cached: set[int] = set()
    replay(events, cached)
    assert cached and len(events) > 20
    assert all(bool(pool.lookup([h])) == (w in cached) for w, h in seen.items())
    for blocks in held:
        pool.free(reversed(blocks))
    assert pool.reset()
    assert isinstance(events[-1], SimCleared)


def test_no_sink_no_events_and_endpoint_rules() -> None:
    pool = BlockPool(num_blocks=2, block_size=1)
    blocks = pool.allocate(1)
    assert blocks is not None
    pool.cache_block(blocks[0], b"h")
    pool.log_stored(blocks, [b"h"], 0, 1, [5])  # no sink: nothing to do, nothing raised
    assert binds("tcp://*:5557") and binds("tcp://127.0.0.1:*") and binds("ipc:///tmp/kv")
    assert not binds("tcp://127.0.0.1:5557")
    assert [replica_endpoint("tcp://*:5557", i) for i in range(3)] == [
        "tcp://*:5557",
        "tcp://*:5558",
        "tcp://*:5559",
    ]
    assert replica_endpoint("tcp://127.0.0.1:*", 2) == "tcp://127.0.0.1:*"


# ---- a replica publishing over ZMQ on loopback -------------------------------------------------------------


@pytest.fixture
async def tiny_fleet() -> AsyncIterator[ReplicaFleet]:
    # tiny-cpu: 32 blocks of 128 tokens, so a few prompts evict
    fleet = await start_fleet(
        1, time_scale=1000.0, profile="tiny-cpu", kv_events_endpoint="tcp://127.0.0.1:*"
    )
    yield fleet
    await fleet.close()


@pytest.fixture
def zctx() -> Iterator[zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    yield ctx
    ctx.destroy(linger=0)


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Subscriber:
    """A SUB socket collecting decoded batches and checking topic and sequence numbers."""

    def __init__(self, sock: zmq.asyncio.Socket) -> None:
        self.sock = sock
        self.seqs: list[int] = []
        self.events: list[Any] = []

    async def drain(self, publisher: KvEventPublisher) -> None:
        """Receive every batch `publisher` has sent so far."""
        await self.until(lambda _: bool(self.seqs) and self.seqs[-1] == publisher.num_batches - 1)

    async def until(self, done: Callable[[list[Any]], bool]) -> list[Any]:
        """Receive batches until `done(all events so far)`; returns the events of this call."""
        start = len(self.events)
        while not done(self.events):
            topic, seq, payload = await asyncio.wait_for(self.sock.recv_multipart(), WAIT_S)
            assert topic == b"" and len(seq) == 8
            batch = DECODER.decode(payload)
            assert batch.data_parallel_rank == 0 and batch.ts > 1e9
            self.seqs.append(int.from_bytes(seq, "big"))
            self.events.extend(batch.events)
        return self.events[start:]


async def completion(http: aiohttp.ClientSession, url: str, prompt: list[int]) -> dict[str, Any]:
    body = {"model": "saga-sim", "prompt": prompt, "max_tokens": 1, "ignore_eos": True}
    async with http.post(f"{url}/v1/completions", json=body) as r:
        assert r.status == 200, await r.text()
        usage: dict[str, Any] = (await r.json())["usage"]
        return usage


async def test_replica_publishes_stored_removed_and_cleared_in_vllm_format(
    tiny_fleet: ReplicaFleet, zctx: zmq.asyncio.Context
) -> None:
    url, replica = tiny_fleet.urls[0], tiny_fleet.replicas[0]
    publisher = replica.kv_publisher
    assert publisher is not None
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/kv_event_sources") as r:
            sources = await r.json()
        # vLLM 0.32's answer: data-parallel rank (a JSON key) -> that rank's KVEventsConfig
        assert sources == {
            "0": {
                "enable_kv_cache_events": True,
                "publisher": "zmq",
                "endpoint": publisher.endpoint,
                "replay_endpoint": None,
                "buffer_steps": 10_000,
                "hwm": 100_000,
                "max_queue_size": 100_000,
                "topic": "",
            }
        }
        sock = zctx.socket(zmq.SUB)
        sock.subscribe(b"")
        sock.connect(sources["0"]["endpoint"])
        await wait_for(publisher.has_subscriber, "the subscription to reach the replica")
        sub = Subscriber(sock)

        bs = 128
        prompt = [(7 * i) % 30000 + 1 for i in range(3 * bs + 5)]  # 3 full blocks and 5 tokens
        assert (await completion(http, url, prompt))["prompt_tokens_details"]["cached_tokens"] == 0
        first = chain(prompt, bs)
        stored = await sub.until(lambda evs: any(isinstance(e, BlockStored) for e in evs))
        assert stored == [
            BlockStored([*map(wire_hash, first)], None, prompt[: 3 * bs], bs, None, "GPU", None, group_idx=0)
        ]

        # the next turn reuses those blocks and stores only its new ones, chained to the last cached block
        longer = prompt + [11] * (2 * bs)
        assert (await completion(http, url, longer))["prompt_tokens_details"]["cached_tokens"] == 3 * bs
        second = chain(longer, bs)
        stored = await sub.until(lambda evs: len(evs) >= 2)
        assert stored == [
            BlockStored(
                [*map(wire_hash, second[3:5])],
                wire_hash(first[2]),
                longer[3 * bs : 5 * bs],
                bs,
                None,
                "GPU",
                None,
                group_idx=0,
            )
        ]

        # three unrelated prompts of 15 blocks each need more than the 32 blocks: LRU evicts all of the above
        for j in range(3):
            await completion(http, url, [20000 + j] * 1900)
        evicted = set(map(wire_hash, second[:5]))

        def removed(evs: list[Any]) -> set[int]:
            return {h for e in evs if isinstance(e, BlockRemoved) for h in e.block_hashes}

        await sub.until(lambda evs: evicted <= removed(evs))
        assert all(e.medium == "GPU" and e.group_idx == 0 for e in sub.events if isinstance(e, BlockRemoved))

        # the stream mirrors the cache exactly: replaying it gives the cached hashes
        await sub.drain(publisher)
        cached: set[int] = set()
        for ev in sub.events:
            if isinstance(ev, BlockStored):
                cached.update(ev.block_hashes)
            elif isinstance(ev, BlockRemoved):
                cached.difference_update(ev.block_hashes)
        known = second + [h for j in range(3) for h in chain([20000 + j] * 1900, bs)]
        pool = replica.engine.pool
        assert all(bool(pool.lookup([h])) == (wire_hash(h) in cached) for h in known)
        assert any(wire_hash(h) in cached for h in known)

        async with http.post(f"{url}/reset_prefix_cache") as r:
            assert (await r.json())["success"] is True
        cleared = await sub.until(lambda evs: isinstance(evs[-1], AllBlocksCleared))
        assert cleared[-1] == AllBlocksCleared()
        assert sub.seqs == list(range(sub.seqs[0], sub.seqs[0] + len(sub.seqs)))  # no batch lost


async def test_a_plain_endpoint_connects_to_a_binding_subscriber(zctx: zmq.asyncio.Context) -> None:
    sock = zctx.socket(zmq.SUB)
    sock.subscribe(b"")
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    fleet = await start_fleet(1, time_scale=1000.0, kv_events_endpoint=f"tcp://127.0.0.1:{port}")
    try:
        publisher = fleet.replicas[0].kv_publisher
        assert publisher is not None and publisher.endpoint == f"tcp://127.0.0.1:{port}"

        def subscribed() -> bool:
            sock.get(zmq.EVENTS)  # a bound SUB sends its subscription once it has processed the connection
            return publisher.has_subscriber()

        await wait_for(subscribed, "the replica to connect")
        sub = Subscriber(sock)
        async with aiohttp.ClientSession() as http:
            await completion(http, fleet.urls[0], list(range(1, 40)))
        events = await sub.until(lambda evs: bool(evs))
        assert events[0].block_hashes == [*map(wire_hash, chain(list(range(1, 40)), 16))]
        assert sub.seqs[0] == 0
    finally:
        await fleet.close()


def test_kv_event_sources_keeps_a_wildcard_host_as_vllm_reports_it() -> None:
    publisher = KvEventPublisher("tcp://*:*")
    try:
        port = publisher.endpoint.rpartition(":")[2]
        assert publisher.endpoint == f"tcp://0.0.0.0:{port}"
        assert publisher.sources()["0"]["endpoint"] == f"tcp://*:{port}"
    finally:
        publisher.close()


async def test_kv_event_sources_is_empty_when_events_are_off() -> None:
    fleet = await start_fleet(1)
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{fleet.urls[0]}/kv_event_sources") as r:
            assert r.status == 200 and await r.json() == {}
        assert fleet.replicas[0].engine.pool.kv_event_sink is None
    finally:
        await fleet.close()
