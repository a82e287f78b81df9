"""One engine of the discrete-event cluster and what the cluster measures around it.

Contract: `step(now)` runs one engine step if the engine has work and returns when it ends (its outputs wait
in `outputs` until the cluster delivers them then), or returns None and marks the replica idle (`stepping`
False) when there is nothing to do. Counters: steps, busy time and prefill tokens from the step results;
`recomputed_prefill_tokens` is the engine's count of what preemption made it redo (prefill a preempted
request had computed before and computed again). KV
usage is sampled by the cluster (`sample_kv`) and averaged over time, each sample holding until the next.
"""

from __future__ import annotations

from loadtests.des.result import ReplicaCounters
from simulator.engine import Engine, RequestOutput


class ClusterReplica:
    """A replica id, its engine, the step in flight and the run's counters."""

    __slots__ = (
        "busy_s",
        "calls",
        "engine",
        "kv_integral",
        "kv_last",
        "kv_last_at",
        "kv_peak",
        "outputs",
        "prefill_tokens",
        "replica_id",
        "reported",
        "stepping",
        "steps",
        "wake_at",
    )

    def __init__(self, replica_id: str, engine: Engine) -> None:
        self.replica_id = replica_id
        self.engine = engine
        self.stepping = False  # a step event is queued
        self.outputs: list[RequestOutput] = []  # of the step in flight, delivered when it ends
        self.reported: tuple[int, int, float] | None = None  # last load sent to the scheduler core
        self.wake_at: float | None = None  # idle until a CPU->GPU KV load is done (simulator.offload)
        self.calls = self.steps = self.prefill_tokens = 0
        self.busy_s = self.kv_integral = self.kv_last = self.kv_last_at = self.kv_peak = 0.0

    def step(self, now: float) -> float | None:
        """Start a step at `now`; when it ends, or None (now idle) if the engine has no work."""
        engine = self.engine
        duration = engine.quiet_step(now)
        if duration is not None:  # a pure-decode step of a decode run: no outputs, no prefill
            self.steps += 1
            self.busy_s += duration
            return now + duration
        return self.ordinary_step(now)

    def ordinary_step(self, now: float) -> float | None:
        """`step` once the engine's `quiet_step` declined: a full engine step, or None (idle)."""
        engine = self.engine
        if not engine.has_unfinished():
            self.stepping = False
            return None
        result = engine.ordinary_step(now)
        if result.duration == 0 and result.num_preempted == 0:
            wake = engine.next_event_time()  # nothing runnable until a KV load is done
            if wake is not None and wake > now:
                self.stepping = False
                self.wake_at = wake
                return None
        self.steps += 1
        self.busy_s += result.duration
        self.prefill_tokens += result.num_prefill_tokens
        self.outputs = result.outputs
        return now + result.duration

    def sample_kv(self, usage: float, now: float) -> None:
        self.kv_integral += self.kv_last * (now - self.kv_last_at)
        self.kv_last, self.kv_last_at = usage, now
        self.kv_peak = max(self.kv_peak, usage)

    def counters(self, end: float) -> ReplicaCounters:
        """The run's counters, with KV usage averaged over [0, end]."""
        s = self.engine.stats()
        ended = self.engine.retention.ended
        integral = self.kv_integral + self.kv_last * max(0.0, end - self.kv_last_at)
        return ReplicaCounters(
            replica_id=self.replica_id,
            calls=self.calls,
            steps=self.steps,
            busy_s=self.busy_s,
            prefill_tokens=self.prefill_tokens,
            recomputed_prefill_tokens=s.prefill_tokens_recomputed_total,
            generation_tokens=s.generation_tokens_total,
            preemptions=s.num_preemptions_total,
            prefix_cache_queries=s.prefix_cache_queries_total,
            prefix_cache_hits=s.prefix_cache_hits_total,
            kv_usage_mean=integral / end if end > 0 else 0.0,
            kv_usage_peak=self.kv_peak,
            retentions_dropped=s.retentions_dropped_total,
            blocks_cached=s.blocks_cached_total,
            blocks_reused=s.blocks_reused_total,
            offload_stored_tokens=s.offload_stored_tokens_total,
            offload_loaded_tokens=s.offload_loaded_tokens_total,
            offload_evicted_blocks=s.offload_evicted_blocks_total,
            retentions_used=ended["used"].count,
            retentions_expired=ended["expired"].count,
            retained_block_s_used=ended["used"].block_seconds,
            retained_block_s_expired=ended["expired"].block_seconds,
            retained_block_s_dropped=ended["dropped"].block_seconds,
            retained_block_s_released=ended["released"].block_seconds,
            # float(): an int 0 when nothing is retained; compiled (mypyc) it would be 0.0 only there
            retained_block_s_live_at_end=float(self.engine.retention.held_block_seconds(end)),
        )
