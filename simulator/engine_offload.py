"""The engine's CPU KV offload hooks (simulator.offload, docs/offload.md), kept apart from the scheduler.

Contract: `Engine` mixes `OffloadHooks` in and calls it from its step and admission: `_finish_loads(now)` at
the start of every step, `_start_load(seq, hit, now)` when admitting the head of the waiting queue,
`_offer_prompt_blocks(seq, full)` as a request's full blocks are cached and `_store_offers(end)` when the step
ends. A request whose prefix continues in the CPU pool beyond its GPU hit gets GPU blocks for that part and
is parked in `_loading` (neither running nor waiting, as vLLM's WAITING_FOR_REMOTE_KVS) until its load is
done; it then joins the running batch (as `max_num_seqs` allows) with those tokens computed.
`next_event_time()` is when the next load completes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from mypy_extensions import mypyc_attr

from simulator.block_hash import BlockHash
from simulator.block_pool import BlockPool
from simulator.cost_model import Profile
from simulator.offload import CpuOffloadTier, cpu_blocks_for
from simulator.request_queue import WaitingQueue
from simulator.request_state import RequestState
from simulator.retention import RetentionTable


@mypyc_attr(allow_interpreted_subclasses=True)  # Engine's base: Engine may be subclassed
class OffloadHooks:
    """The offload half of `simulator.engine.Engine` (which sets these attributes)."""

    profile: Profile
    block_size: int
    pool: BlockPool
    retention: RetentionTable
    offload: CpuOffloadTier | None
    prefill_tokens_total: int
    prefill_recomputed_total: int
    _waiting: WaitingQueue[RequestState]
    _running: list[RequestState]
    _session_of: dict[str, tuple[str, float | None, int]]
    _blocked: tuple[RequestState, int, int, bool, int, int] | None
    _loading: dict[RequestState, float]
    _loaded: list[RequestState]
    _offers: list[BlockHash]
    _load_blocked: tuple[RequestState, int] | None

    def _iter_hashes(self, seq: RequestState, num_blocks: int) -> Iterator[BlockHash]:
        raise NotImplementedError

    def session_of(self, request_id: str) -> str | None:
        """The session a running request names (None: none): its KV events carry it, as vLLM's do."""
        session = self._session_of.get(request_id)
        return None if session is None else session[0]

    def _free(self, seq: RequestState) -> None:
        raise NotImplementedError

    def next_event_time(self) -> float | None:
        """When a request waiting for a CPU->GPU load can next become runnable (the earliest pending load's
        end), None when none is loading. A driver whose step scheduled nothing sleeps until then; a
        coalesced run of decode steps must stop there (the batch may change)."""
        return min(self._loading.values()) if self._loading else None

    def _start_load(self, seq: RequestState, hit: list[int], now: float) -> bool | None:
        """Admission of `seq` (the head of the queue) when its prefix continues in the CPU pool beyond the
        GPU hit: allocate GPU blocks for the CPU hit, load it, park the request until the load is done (as
        vLLM's WAITING_FOR_REMOTE_KVS). None: no CPU hit, admit as usual; True: loading; False: too few
        free blocks for the load (admission stops, as for any request that does not fit)."""
        assert self.offload is not None
        bs, pool = self.block_size, self.pool
        full = (len(seq.tokens) - 1) // bs
        h = len(hit)
        if h >= full:
            return None
        k = self.offload.lookup(itertools.islice(self._iter_hashes(seq, full), h, None))
        if k == 0:
            return None
        # Contract v2, as in `_admit_waiting`: the head breaks only less important retentions, any when
        # nothing runs
        breaks_below = seq.priority if self._running else None
        if k + pool.num_evictable(hit) > pool.num_free and not self.retention.make_room(k, hit, breaks_below):
            # a load needs no token budget
            self._blocked = (seq, pool.version, self.retention.version, bool(self._running), 0, h)
            self._load_blocked = (seq, self.offload.blocks_evicted)
            return False
        self._waiting.pop()
        pool.touch(hit)
        pool.record_reuse(hit)
        new_blocks = pool.allocate(k)
        assert new_blocks is not None
        session = self._session_of.get(seq.request_id)
        if session is not None:
            self.retention.release(session[0])  # superseded: this request now holds its own references
        seq.set_blocks(hit, new_blocks)
        seq.num_cached_blocks = h
        seq.num_computed = h * bs
        if seq.cached_tokens < 0:
            seq.cached_tokens = (h + k) * bs  # vLLM counts externally loaded tokens as cached
        if seq.num_preemptions == 0:
            pool.record_query(len(seq.tokens), h * bs)  # the GPU prefix cache's own hits only
        self._loading[seq] = self.offload.load(seq.block_hashes[h : h + k], now)
        return True

    def _finish_loads(self, now: float) -> None:
        """Requests whose load is done by `now` register the loaded blocks in the prefix cache and join the
        running batch (as many as `max_num_seqs` allows, in load order)."""
        assert self.offload is not None
        self.offload.release(now)
        if not self._loading and not self._loaded:
            return
        done = [seq for seq, at in self._loading.items() if at <= now]
        for seq in done:
            del self._loading[seq]
            n = len(seq.block_ids)
            loaded = seq.block_ids[seq.num_cached_blocks : n]
            for k in range(seq.num_cached_blocks, n):
                self.pool.cache_block(seq.block_ids[k], seq.block_hashes[k])
            self.pool.record_reuse(loaded)  # loaded for a prefix hit: useful KV by construction
            if self.pool.kv_event_sink is not None:
                self.pool.log_stored(
                    seq.block_ids,
                    seq.block_hashes,
                    seq.num_cached_blocks,
                    n,
                    seq.tokens,
                    self.session_of(seq.request_id),
                )
            seq.num_cached_blocks = n
            seq.num_computed = n * self.block_size
            self._loaded.append(seq)
        room = self.profile.max_num_seqs - len(self._running)
        if room > 0 and self._loaded:
            joining, self._loaded = self._loaded[:room], self._loaded[room:]
            for seq in joining:
                if seq.first_scheduled < 0:
                    seq.first_scheduled = now
                self._running.append(seq)

    def _drop_loading(self, seq: RequestState) -> bool:
        """Abort of a request parked for a load: free its blocks (the load itself runs to its end)."""
        if self._loading.pop(seq, None) is None:
            if seq not in self._loaded:
                return False
            self._loaded.remove(seq)
        self._free(seq)
        return True

    def _offer_prompt_blocks(self, seq: RequestState, full: int) -> None:
        """Hand the CPU tier the prompt's full blocks computed or hit so far (vLLM's offload_prompt_only
        default); stored when the step ends."""
        end = min(full, seq.num_prompt // self.block_size)
        if end > seq.num_offered:
            self._offers += seq.block_hashes[seq.num_offered : end]
            seq.num_offered = end

    def _store_offers(self, at: float) -> None:
        assert self.offload is not None
        self.offload.offer(self._offers, at)
        self._offers.clear()

    def _offload_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "prefill_tokens_total": self.prefill_tokens_total,
            "prefill_tokens_recomputed_total": self.prefill_recomputed_total,
            "num_loading": len(self._loading) + len(self._loaded),
        }
        tier = self.offload
        if tier is not None:
            bs = self.block_size
            stats.update(
                num_cpu_blocks=tier.num_blocks,
                cpu_kv_usage=tier.usage,
                offload_stored_tokens_total=tier.blocks_stored * bs,
                offload_loaded_tokens_total=tier.blocks_loaded * bs,
                offload_evicted_blocks_total=tier.blocks_evicted,
            )
        return stats


def offload_tier(profile: Profile, gib: float | None) -> CpuOffloadTier | None:
    """The CPU pool `gib` GiB buys at this profile's KV bytes per block; ValueError naming what is missing."""
    if gib is None:
        return None
    if profile.kv_bytes_per_token <= 0 or profile.host_link_gb_per_s <= 0:
        raise ValueError(f"profile {profile.name}: KV offload needs kv_bytes_per_token, host_link_gb_per_s")
    return CpuOffloadTier(
        cpu_blocks_for(gib, profile.kv_bytes_per_block),
        bytes_per_block=profile.kv_bytes_per_block,
        link_bytes_per_s=profile.host_link_gb_per_s * 1e9,
    )
