"""A `--scheduler-cls` for vLLM 0.32 that serves KV retention contract v2 (docs/retention-api.md).

Contract, the same as the simulated replica's (simulator/engine.py), with the same retention table (a
byte-identical copy of simulator/retention.py):
- A request finishing normally (not aborted) whose `vllm_xargs` carry `saga_retain_ttl_s` retains its
  leading chain of cached full blocks (prompt and output) for its session (`Request.session_id`, which vLLM
  fills from the `X-Session-ID` header, the body's `session_id` or `vllm_xargs.session_id`), with priority
  `vllm_xargs.saga_retain_priority`, else the request's own `priority`. The references are taken before the
  request's own free, so the blocks never pass through the free queue.
- Takeover: once the session's next request is scheduled (it holds its own references through its prefix
  hit), the session's retention is released.
- Who may break a retention: expired ones are released at the start of every `schedule()`; a running
  request whose `allocate_slots` fails releases retentions, least important first, before vLLM preempts
  anything; a waiting (or preempted) request whose `allocate_slots` fails releases only retentions strictly
  less important than itself, and only if that lets it in; with nothing running it may release any.
- The caps (`SAGA_RETAIN_MAX_FRACTION`, default 0.5 of the usable blocks; `SAGA_RETAIN_MAX_TTL_S`, default
  600) are the table's. Retentions are not pending work (`has_requests` is unchanged). `reset_prefix_cache`
  releases every retention first; while requests run it is refused and they are kept.
- Everything touching the block pool runs on the engine thread: `schedule`, the frees, and `saga_command`
  (reached through the engine core's `saga_retention` utility method, saga_vllm_plugin.engine_hook).
Supported: vLLM >=0.32,<0.33 (checked at construction), prefix caching on, one KV-cache group (full
attention models); anything else fails at start with a message naming the problem.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from saga_vllm_plugin import check_vllm_version
from saga_vllm_plugin.retention_table import (
    DEFAULT_MAX_RETAIN_TTL_S,
    DEFAULT_MAX_RETAINED_FRACTION,
    RetentionTable,
    check_session_id,
    check_ttl,
    retain_priority,
)

log = logging.getLogger("vllm.saga_vllm_plugin")  # under vLLM's logger: its handlers and level apply

MAX_FRACTION_ENV = "SAGA_RETAIN_MAX_FRACTION"
MAX_TTL_ENV = "SAGA_RETAIN_MAX_TTL_S"


class VllmBlockPool:
    """vLLM's BlockPool seen as the retention table's KvPool: blocks by id, the null block excluded.
    `reserved` is subtracted from the free count while an admission that keeps blocks in reserve is tried."""

    def __init__(self, pool: Any, block_size: int) -> None:
        self._pool = pool
        self._blocks = pool.blocks
        self.block_size = block_size
        self.num_blocks = pool.num_gpu_blocks - 1  # block 0 is vLLM's null block
        self.reserved = 0

    @property
    def num_free(self) -> int:
        return int(self._pool.get_num_free_blocks()) - self.reserved

    def ref_count(self, block_id: int) -> int:
        return int(self._blocks[block_id].ref_cnt)

    def num_evictable(self, block_ids: Iterable[int]) -> int:
        blocks = self._blocks
        return sum(1 for b in block_ids if blocks[b].ref_cnt == 0)

    def touch(self, block_ids: Iterable[int]) -> None:
        self._pool.touch([self._blocks[b] for b in block_ids])

    def free(self, block_ids: Iterable[int]) -> None:
        self._pool.free_blocks([self._blocks[b] for b in block_ids])


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def retain_args(request: Request) -> tuple[str, float, int] | None:
    """(session, TTL, priority) a request asks to retain under, or None. The endpoint plugin has answered
    400 to malformed values already; anything still malformed here is ignored with a warning."""
    params = request.sampling_params
    extra = (params.extra_args if params is not None else None) or {}
    raw_ttl = extra.get("saga_retain_ttl_s")
    if raw_ttl is None:
        return None
    session = request.session_id or extra.get("session_id")
    try:
        ttl = float(raw_ttl)
        check_ttl(ttl)
        raw_priority = extra.get("saga_retain_priority")
        priority = request.priority if raw_priority is None else retain_priority(raw_priority)
        if not isinstance(session, str) or not session:
            raise ValueError("no session id")
        check_session_id(session)  # else the table's retain would raise on the engine thread
    except (TypeError, ValueError, OverflowError) as e:  # on the engine thread: never raise from here
        log.warning("request %s: retention not granted: %s", request.request_id, e)
        return None
    return session, ttl, priority


class RetentionMixin:
    """The contract v2 behaviour, mixed into vLLM's Scheduler or AsyncScheduler (see the module contract)."""

    # set by Scheduler.__init__
    kv_cache_manager: Any
    kv_cache_config: Any
    cache_config: Any
    running: list[Request]
    requests: dict[str, Request]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_vllm_version()
        super().__init__(*args, **kwargs)
        if not self.cache_config.enable_prefix_caching:
            raise ValueError("saga_vllm_plugin's scheduler needs prefix caching: add --enable-prefix-caching")
        if len(self.kv_cache_config.kv_cache_groups) != 1:
            raise ValueError(
                "saga_vllm_plugin's scheduler supports models with one KV-cache group (full attention); "
                f"this one has {len(self.kv_cache_config.kv_cache_groups)}"
            )
        manager = self.kv_cache_manager
        self.saga_pool = VllmBlockPool(manager.block_pool, self.cache_config.block_size)
        self.saga_retention = RetentionTable(
            self.saga_pool,
            max_fraction=_env_float(MAX_FRACTION_ENV, DEFAULT_MAX_RETAINED_FRACTION),
            max_ttl_s=_env_float(MAX_TTL_ENV, DEFAULT_MAX_RETAIN_TTL_S),
        )
        self._saga_clock = time.monotonic
        self._saga_last_required = 0
        self._saga_allocate = manager.allocate_slots
        manager.allocate_slots = self._saga_allocate_slots
        count = manager.coordinator.get_num_blocks_to_allocate

        def counting(*a: Any, **kw: Any) -> int:
            n = int(count(*a, **kw))
            self._saga_last_required = n  # what the failed allocation needed (before the watermark)
            return n

        manager.coordinator.get_num_blocks_to_allocate = counting
        log.info(
            "saga_vllm_plugin: KV retention contract v2 on; cap %d of %d blocks, TTL cap %.0f s",
            self.saga_retention.max_blocks,
            self.saga_pool.num_blocks,
            self.saga_retention.max_ttl_s,
        )

    # ---- scheduling -----------------------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        self.saga_retention.expire(self._saga_clock())
        out = super().schedule(*args, **kwargs)  # type: ignore[misc]
        for new in out.scheduled_new_reqs:
            request = self.requests.get(new.req_id)
            if request is not None and request.session_id:
                # superseded: this request now holds its own references through its prefix hit
                self.saga_retention.release(request.session_id)
        return out

    def _saga_allocate_slots(self, request: Request, num_new_tokens: int, *args: Any, **kwargs: Any) -> Any:
        allocate = self._saga_allocate
        blocks = allocate(request, num_new_tokens, *args, **kwargs)
        table = self.saga_retention
        if blocks is not None or table.num_sessions == 0:
            return blocks
        if request.status == RequestStatus.RUNNING:
            while blocks is None and table.release_least_important():
                blocks = allocate(request, num_new_tokens, *args, **kwargs)
            return blocks
        # waiting or preempted: only less important retentions, any when nothing runs
        pool = self.saga_pool
        computed = kwargs.get("new_computed_blocks")
        hit = [b.block_id for b in computed.blocks[0] if not b.is_null] if computed is not None else []
        has_scheduled = kwargs.get("has_scheduled_reqs", True)
        watermark = self.kv_cache_manager.watermark_blocks if has_scheduled else 0
        required = self._saga_last_required + watermark
        pool.reserved = int(kwargs.get("reserved_blocks", 0))
        try:
            priority = request.priority if self.running else None
            room = table.make_room(required - pool.num_evictable(hit), hit, priority)
        finally:
            pool.reserved = 0
        return allocate(request, num_new_tokens, *args, **kwargs) if room else None

    def _free_blocks(self, request: Request) -> None:
        if request.status != RequestStatus.FINISHED_ABORTED:
            asked = retain_args(request)
            if asked is not None:
                session, ttl, priority = asked
                chain: list[int] = []
                for block in self.kv_cache_manager.get_blocks(request.request_id).blocks[0]:
                    if block.is_null or block.block_hash is None:
                        break
                    chain.append(block.block_id)
                self.saga_retention.retain(session, chain, ttl, self._saga_clock(), priority)
        super()._free_blocks(request)  # type: ignore[misc]

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        if self.running and not reset_running_requests:
            return False  # refused while requests hold blocks, as vLLM does; the retentions stay
        self.saga_retention.release_all()
        return bool(super().reset_prefix_cache(reset_running_requests, reset_connector))  # type: ignore[misc]

    # ---- commands from the endpoint plugin (engine thread) --------------------------------------------

    def saga_command(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """`retain` (re-arm), `release`, `retained` or `stats`; plain data for the utility call's reply."""
        now = self._saga_clock()
        table = self.saga_retention
        table.expire(now)
        if op == "retain":
            ttl = float(body["ttl_s"])
            if not (math.isfinite(ttl) and ttl > 0):
                return {"status": 400, "message": f"ttl_s must be a positive number of seconds, got {ttl}"}
            info = table.extend(str(body["session_id"]), ttl, now, body.get("priority"))
            if info is None:
                return {"status": 404, "message": f"session {body['session_id']!r} holds no retained KV"}
            return {"status": 200, "body": msgspec.to_builtins(info)}
        if op == "release":
            num_blocks = table.release(str(body["session_id"]))
            released = {"session_id": body["session_id"], "released": num_blocks is not None}
            return {"status": 200, "body": {**released, "num_blocks": num_blocks or 0}}
        if op == "retained":
            listing = {
                "now": now,
                "num_blocks": table.num_blocks,
                "max_blocks": table.max_blocks,
                "max_ttl_s": table.max_ttl_s,
                "block_size": self.saga_pool.block_size,
                "sessions": msgspec.to_builtins(table.snapshot(now)),
                "num_references": table.num_references,
                "max_references": table.max_references,
            }
            return {"status": 200, "body": listing}
        if op == "stats":
            stats = {"blocks": table.num_blocks, "sessions": table.num_sessions, "dropped": table.num_dropped}
            return {"status": 200, "body": stats}
        return {"status": 400, "message": f"unknown retention command {op!r}"}

    def saga_held_blocks(self) -> Sequence[Sequence[int]]:
        return self.saga_retention.held()


class RetainingScheduler(RetentionMixin, Scheduler):  # type: ignore[misc]
    """vLLM's v1 Scheduler with KV retention contract v2 (the CPU backend; GPUs without async scheduling)."""


class RetainingAsyncScheduler(RetentionMixin, AsyncScheduler):  # type: ignore[misc]
    """vLLM's AsyncScheduler with KV retention contract v2 (GPUs, where async scheduling is the default)."""
