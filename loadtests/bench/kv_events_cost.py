"""`python -m loadtests.bench.kv_events_cost`: what following the replicas' KV events costs the proxy
(`kv_events`, proxy/kv_events.py and proxy/kv_residency.py): decoding and applying a replica's batches (vLLM's
wire format, token ids included, as the simulated replica publishes it), per cached block; and the per-call
look-up of a session's residency over `--replicas` subscribed replicas (each holding its own `--sessions`
sessions). Prints CPU µs (process time), the best of `--repeat` runs.

The batches: `--sessions` agent sessions on one replica, each call storing its new blocks (16 tokens each)
in runs as chunked prefill does, and every so often a batch evicting the oldest blocks (LRU), so the index
stays at `--blocks` cached blocks.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from proxy.kv_residency import KvResidency, decode_batch
from simulator.block_hash import BlockHash
from simulator.kv_events import KvEvent, block_removed, block_stored, encode_message

BLOCK = 16


def payloads(
    sessions: int, blocks: int, calls: int, seed: int = 0, prefix: str = ""
) -> tuple[list[bytes], int]:
    """A replica's published batches (its sessions named `prefix` + s<i>), and how many blocks they store."""
    rng = random.Random(seed)
    tips: dict[str, BlockHash | None] = {f"{prefix}s{i}": None for i in range(sessions)}
    cached: list[BlockHash] = []
    out: list[bytes] = []
    next_hash = 1
    stored = 0
    for seq in range(calls):
        session = f"{prefix}s{rng.randrange(sessions)}"
        n = rng.randrange(8, 64)  # a call's new blocks: 128-1,024 tokens of observation and answer
        hashes: list[BlockHash] = list(range(next_hash, next_hash + n))
        next_hash += n
        events: list[KvEvent] = []
        for start in range(0, n, 32):  # chunked prefill: runs of up to 32 blocks
            run = hashes[start : start + 32]
            parent = tips[session] if start == 0 else hashes[start - 1]
            tokens = [rng.randrange(32_000) for _ in range(len(run) * BLOCK)]
            events.append(block_stored(run, parent, tokens, BLOCK, session))
        tips[session] = hashes[-1]
        cached += hashes
        stored += n
        if len(cached) > blocks:
            evicted, cached = cached[: len(cached) - blocks], cached[len(cached) - blocks :]
            events.append(block_removed(evicted))
        out.append(encode_message(b"", seq, 0.0, events)[2])
    return out, stored


def best_of(repeat: int, run: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--blocks", type=int, default=27_000, help="cached blocks per replica (~an 8B H100)")
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    batches, stored = payloads(args.sessions, args.blocks, args.calls)

    def apply_all() -> None:
        kv = KvResidency()
        for seq, payload in enumerate(batches):
            events, skipped = decode_batch(payload)
            kv.apply("r0", seq, events, skipped)

    applied = best_of(args.repeat, apply_all)
    kv = KvResidency()  # each replica with sessions of its own, as a fleet under session affinity
    for r in range(args.replicas):
        for seq, payload in enumerate(payloads(args.sessions, args.blocks, 200, seed=r, prefix=f"r{r}-")[0]):
            kv.apply(f"r{r}", seq, decode_batch(payload)[0])
    sessions = [f"r{r}-s{i}" for r in range(args.replicas) for i in range(args.sessions)]

    def look_up() -> None:
        for _ in range(10):
            for s in sessions:
                kv.resident_tokens(s)

    looked = best_of(args.repeat, look_up)
    print(
        f"decode + apply: {applied / stored * 1e6:.2f} µs per stored block "
        f"({stored:,} blocks in {len(batches):,} batches, {args.blocks:,} cached)"
    )
    per_call = looked / (10 * len(sessions)) * 1e6
    print(f"per call: {per_call:.2f} µs to look a session up on {args.replicas} replicas")


if __name__ == "__main__":
    main()
