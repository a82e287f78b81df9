"""What a discrete-event cluster run is configured with and what it reports (plain msgspec structs).

Contract: every field of a result is a deterministic function of the tasks and the `ClusterConfig` (times are
virtual seconds; nothing here measures the wall clock), so two runs with the same inputs compare equal.
Task records are `loadtests.agent_client.TaskRecord`s in the order the tasks were given; `summary()` is
`loadtests.summary.summarize` over them.
"""

from __future__ import annotations

import math

import msgspec

from fairness.tenants import TenantsConfig
from loadtests.summary import Summary, summarize
from loadtests.tasks import TaskRecord
from proxy.scheduler.registry import PolicySpec
from proxy.scheduler.release import ReleaseQueueSpec
from simulator.cost_model import Profile, get_profile, with_kv_capacity


class ClusterConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One run's setup. `concurrency` (closed loop) and `arrival_rate` (open loop, tasks per virtual second)
    apply to tasks without an `arrival_s`; with neither, every such task starts at time 0."""

    replicas: int = 4
    profile: str | Profile = "llama3-8b-h100"
    policy: str | PolicySpec = "round-robin"
    seed: int = 0  # the policy's random choices and the open-loop arrivals
    concurrency: int | None = None
    arrival_rate: float | None = None
    scheduling_policy: str = "priority"  # the engines' queue order, as the simulated HTTP replicas use
    stats_interval_s: float = 0.1  # replica_stats to the core, and KV usage samples
    tick_interval_s: float = 1.0
    session_idle_ttl_s: float = 3600.0
    pass_block_hashes: bool = True  # hand the engines the clients' prompt block hashes (same results)
    queue: ReleaseQueueSpec | None = None  # hold calls in the proxy and release them in a fair order
    tenants: TenantsConfig | None = None  # weights and SLO classes (the queue's; defaults when None)
    coalesce_decode: bool = True  # run pure-decode steps coalesced in the engines (same results, faster)
    # KV capacity per replica: vLLM's --num-gpu-blocks-override (N blocks, N - 1 usable), or a fraction of
    # the profile's (max_model_len lowered to the capacity if it is larger, as vLLM would need); and a CPU KV
    # offload pool per replica (vLLM's --kv-offloading-size, GiB)
    kv_blocks: int | None = None
    kv_scale: float | None = None
    kv_offload_gib: float | None = None
    # Give the core each call's `kv_resident`: how much of its session's context every replica it was sent to
    # still caches, as a proxy subscribed to the replicas' KV events knows it (proxy/kv_residency.py)
    kv_events: bool = False

    def resolved_profile(self) -> Profile:
        profile = self.profile if isinstance(self.profile, Profile) else get_profile(self.profile)
        sized = with_kv_capacity(profile, num_gpu_blocks=self.kv_blocks, scale=self.kv_scale)
        if sized.max_model_len > sized.kv_capacity_tokens and sized is not profile:
            # what a vLLM user does when the KV cannot hold one max-length request: lower --max-model-len
            sized = msgspec.structs.replace(sized, max_model_len=sized.kv_capacity_tokens)
        return sized

    def policy_name(self) -> str:
        return self.policy if isinstance(self.policy, str) else "custom"

    def validate(self) -> None:
        """Raise ValueError naming the bad field."""
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")
        if self.concurrency is not None and self.arrival_rate is not None:
            raise ValueError("give concurrency (closed loop) or arrival_rate (open loop), not both")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.arrival_rate is not None and not self.arrival_rate > 0:
            raise ValueError(f"arrival_rate must be positive, got {self.arrival_rate}")
        for name in ("stats_interval_s", "tick_interval_s", "session_idle_ttl_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.kv_offload_gib is not None and not (0 < self.kv_offload_gib < math.inf):
            raise ValueError(f"kv_offload_gib must be positive (and finite), got {self.kv_offload_gib}")
        profile = self.resolved_profile()
        profile.validate()
        if self.kv_offload_gib is not None and not (
            profile.kv_bytes_per_token and profile.host_link_gb_per_s
        ):
            raise ValueError(
                f"profile {profile.name} cannot offload: no kv_bytes_per_token/host_link_gb_per_s"
            )


class ReplicaCounters(msgspec.Struct, kw_only=True):
    """One replica over a run: engine counters at its end, plus what the cluster measured around it."""

    replica_id: str
    calls: int  # dispatched to it
    steps: int
    busy_s: float  # summed step durations
    prefill_tokens: int  # computed in prefill steps, recomputation included
    recomputed_prefill_tokens: int  # prefill computed again because the request was preempted
    generation_tokens: int
    preemptions: int
    prefix_cache_queries: int  # prompt tokens looked up (first admission of each request)
    prefix_cache_hits: int
    kv_usage_mean: float  # time-weighted over the stats samples (sample and hold)
    blocks_cached: int = 0  # full blocks whose hash entered the prefix cache
    blocks_reused: int = 0  # of those, reused by a later prefix hit before eviction (useful KV)
    kv_usage_peak: float
    retentions_dropped: int = 0
    offload_stored_tokens: int = 0  # GPU->CPU (CPU KV offload)
    offload_loaded_tokens: int = 0  # CPU->GPU instead of recomputing
    offload_evicted_blocks: int = 0  # from the CPU pool
    # Retained KV (simulator.retention's bookkeeping): block-seconds held by retentions, by how they ended —
    # taken over by the session's next call (used), TTL ran out (expired), released early by the cap or
    # memory pressure (dropped), let go by a client (released), still held when the run ended (live_at_end:
    # every task has ended by then, so no session comes back for them)
    retentions_used: int = 0
    retentions_expired: int = 0
    retained_block_s_used: float = 0.0
    retained_block_s_expired: float = 0.0
    retained_block_s_dropped: float = 0.0
    retained_block_s_released: float = 0.0
    retained_block_s_live_at_end: float = 0.0

    @property
    def retained_block_s_wasted(self) -> float:
        """Block-seconds retained for sessions that did not come back to use them within the TTL."""
        return (
            self.retained_block_s_expired
            + self.retained_block_s_dropped
            + self.retained_block_s_released
            + self.retained_block_s_live_at_end
        )

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0


class ClusterProgress(msgspec.Struct, kw_only=True):
    """A snapshot handed to the progress callback (cheap to build; every `progress_interval_s`)."""

    now_s: float
    tasks_total: int
    tasks_started: int
    tasks_finished: int
    calls_finished: int
    calls_failed: int
    calls_in_flight: int
    running: int  # summed over replicas at the last stats sample
    waiting: int
    kv_usage_mean: float  # mean over replicas at the last stats sample
    preemptions: int
    events: int


class KvFigures(msgspec.Struct, kw_only=True):
    """A run's KV oversubscription (live tasks' context over cluster KV capacity: peak and time-average)
    and CPU offload traffic, summed over replicas (tokens)."""

    kv_capacity_tokens: int
    oversubscription_peak: float
    oversubscription_mean: float
    offload_gib_per_replica: float | None = None
    offload_stored_tokens: int = 0
    offload_loaded_tokens: int = 0
    # retained KV over the replicas (ReplicaCounters): block-seconds the session's next call used, and those
    # spent on sessions that did not come back within the TTL (expired, dropped, released or held at the end)
    retained_block_s_used: float = 0.0
    retained_block_s_wasted: float = 0.0
    retained_block_s_expired: float = 0.0

    @property
    def retained_wasted_fraction(self) -> float | None:
        """The share of retained block-seconds that no returning session used; None without retention."""
        total = self.retained_block_s_used + self.retained_block_s_wasted
        return self.retained_block_s_wasted / total if total > 0 else None


class ClusterResult(msgspec.Struct, kw_only=True):
    config: ClusterConfig
    duration_s: float  # from time 0 to the end of the last task
    tasks: list[TaskRecord]
    replicas: list[ReplicaCounters]
    events: int  # discrete events run
    # KV oversubscription: total context of live tasks (running or between calls) over the cluster's KV
    # capacity, sampled every stats_interval_s: its peak and time-average over the run
    kv_capacity_tokens: int = 0  # the cluster's: replicas x usable GPU KV tokens
    kv_oversubscription_peak: float = 0.0
    kv_oversubscription_mean: float = 0.0

    @property
    def calls(self) -> int:
        return sum(len(t.calls) for t in self.tasks)

    def summary(self) -> Summary:
        return summarize(self.tasks)

    def kv_figures(self) -> KvFigures:
        """Oversubscription and CPU offload figures, for the bench report."""
        return KvFigures(
            kv_capacity_tokens=self.kv_capacity_tokens,
            oversubscription_peak=self.kv_oversubscription_peak,
            oversubscription_mean=self.kv_oversubscription_mean,
            offload_gib_per_replica=self.config.kv_offload_gib,
            offload_stored_tokens=sum(r.offload_stored_tokens for r in self.replicas),
            offload_loaded_tokens=sum(r.offload_loaded_tokens for r in self.replicas),
            retained_block_s_used=sum(r.retained_block_s_used for r in self.replicas),
            retained_block_s_wasted=sum(r.retained_block_s_wasted for r in self.replicas),
            retained_block_s_expired=sum(r.retained_block_s_expired for r in self.replicas),
        )

    def prefix_hit_rate(self) -> float:
        """Token-weighted prefix-cache hit rate over every replica."""
        queries = sum(r.prefix_cache_queries for r in self.replicas)
        return sum(r.prefix_cache_hits for r in self.replicas) / queries if queries else 0.0
