"""vLLM's KV-cache events on the wire: what a simulated replica publishes when KV events are on.

Contract (vllm/distributed/kv_events.py, the format vLLM 0.28+ sends and vllm-router's kv_aware reads):
- One ZMQ message per batch, multipart `[topic, seq, payload]`: `seq` is the batch's sequence number
  (from 0, per publisher) as 8 bytes big-endian; `payload` is msgpack of `KVEventBatch`.
- A batch is a positional array `[ts, events, data_parallel_rank]` (`array_like`); each event is a map tagged
  by its class name under "type". Fields with a default are left out when they hold it (`omit_defaults`);
  `lora_id`, `medium` and `lora_name` have none, so they are always sent (nil when unset).
- Block hashes are 64-bit unsigned ints, as vLLM externalises them by default
  (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1): the low 64 bits of a bytes digest read big-endian; an int hash
  (the simulator's "builtin" algorithm, which may be negative) is reduced modulo 2**64.
- Hashes are opaque keys: a consumer matches prefixes on `token_ids` and uses hashes to chain a stored run to
  its parent (`parent_block_hash`, None for a request's first block) and to find removed blocks.
This module does no I/O; simulator.kv_publisher sends what `encode_message` returns.
"""

from __future__ import annotations

from typing import Any

import msgspec

from simulator.block_hash import BlockHash

MEDIUM_GPU = "GPU"
_U64 = (1 << 64) - 1


class EndpointError(ValueError):
    """A KV events endpoint ZMQ cannot bind or connect to (simulator/kv_publisher.py; the command line says
    so in one line). Here, not there, so the command line need not import ZMQ to catch it."""


class KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):
    """Base of the three event types; the tag ("type": class name) tells them apart."""


class BlockStored(KVCacheEvent):
    """Full blocks that entered the prefix cache: consecutive blocks of one request, in chain order."""

    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]  # len(block_hashes) x block_size tokens
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = None  # vLLM names the KV cache group; a single-group model is group 0
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None
    locality: str | None = None
    ownership: str | None = None
    session_id: str | None = None  # the request's session (vLLM 0.32+): body `session_id` or X-Session-ID


class BlockRemoved(KVCacheEvent):
    """Blocks evicted from the prefix cache (their hashes no longer give hits)."""

    block_hashes: list[int]
    medium: str | None
    group_idx: int | None = None


class AllBlocksCleared(KVCacheEvent):
    """The whole prefix cache was dropped (`/reset_prefix_cache`)."""


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared


class KVEventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float  # wall-clock seconds since the epoch, as vLLM's time.time()
    events: list[KvEvent]
    data_parallel_rank: int | None = None


def external_hash(block_hash: BlockHash) -> int:
    """A block hash as vLLM puts it on the wire: an unsigned 64-bit int."""
    if isinstance(block_hash, int):
        return block_hash & _U64
    return int.from_bytes(block_hash, "big") & _U64


def block_stored(
    hashes: list[BlockHash],
    parent: BlockHash | None,
    token_ids: list[int],
    block_size: int,
    session_id: str | None = None,
) -> BlockStored:
    """The event for a run of newly cached blocks (`token_ids` covers exactly those blocks)."""
    return BlockStored(
        block_hashes=[external_hash(h) for h in hashes],
        parent_block_hash=None if parent is None else external_hash(parent),
        token_ids=token_ids,
        block_size=block_size,
        lora_id=None,
        medium=MEDIUM_GPU,
        lora_name=None,
        group_idx=0,
        session_id=session_id,
    )


def block_removed(hashes: list[BlockHash]) -> BlockRemoved:
    return BlockRemoved(block_hashes=[external_hash(h) for h in hashes], medium=MEDIUM_GPU, group_idx=0)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(KVEventBatch)


def encode_message(
    topic: bytes, seq: int, ts: float, events: list[KvEvent], data_parallel_rank: int = 0
) -> tuple[bytes, bytes, bytes]:
    """The three frames of one published batch."""
    batch = KVEventBatch(ts=ts, events=events, data_parallel_rank=data_parallel_rank)
    return topic, seq.to_bytes(8, "big"), _encoder.encode(batch)


def decode_payload(payload: bytes) -> KVEventBatch:
    """Decode a batch's payload frame (as a subscriber does; for tests and tools)."""
    return _decoder.decode(payload)
