"""What the harness reports for one policy's run, computed from task records alone where it can be.

Contract: `policy_metrics(records, tasks, ...)` is a pure function. Task completion time (TCT) statistics
cover the tasks that finished without error; calls count when they got an answer.
- SLO attainment: the share of all tasks (failed ones count as missed) finished within `slo_factors[class]`
  x their isolated time (loadtests/bench/isolated.py); the published design's SLO is 1.5x.
- prefix hit rate: cached prompt tokens / prompt tokens, over every answered call.
- recomputed prefill tokens: prompt tokens a call prefilled although the session had computed them before —
  for each call after the first, min(prompt, previous prompt + previous output) minus its cached tokens (only
  the shared system prompt carries over when the task replaces its history). Cache misses on work the
  session already paid for: what affinity and retention exist to avoid.
- throughput: finished tasks, and prompt plus completion tokens, per second of the run's makespan.
Engine-side figures (preemptions, KV utilisation, useful KV fraction) come from the runner and are passed
through; None means the runner could not measure them.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence

import msgspec

from loadtests.des.result import KvFigures
from loadtests.summary import percentile
from loadtests.tasks import AgentTask, TaskRecord

DEFAULT_SLO_FACTORS: dict[str, float] = {"standard": 1.5, "interactive": 1.2, "batch": 3.0}


class PolicyMetrics(msgspec.Struct, kw_only=True):
    tasks: int
    failed: int
    calls: int
    tct_mean_s: float
    tct_geomean_s: float
    tct_p50_s: float
    tct_p99_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    slo_attainment: float
    prefix_hit_rate: float
    recomputed_prefill_tokens: int
    throughput_tasks_per_s: float
    throughput_tokens_per_s: float
    makespan_s: float
    preemptions: int | None = None
    kv_utilization_mean: float | None = None
    useful_kv_fraction: float | None = None
    speedup_vs_baseline: float = 1.0
    wall_s: float = 0.0
    kv: KvFigures | None = None  # discrete-event runs: KV oversubscription and CPU offload traffic

    @property
    def kv_oversubscription_peak(self) -> float | None:
        return self.kv.oversubscription_peak if self.kv is not None else None

    @property
    def offload_loaded_tokens(self) -> int | None:
        kv = self.kv
        return kv.offload_loaded_tokens if kv is not None and kv.offload_gib_per_replica else None


def recomputed_tokens(record: TaskRecord, replace_history: bool, system_tokens: int) -> int:
    total = 0
    calls = record.calls
    for prev, call in itertools.pairwise(calls):
        if call.error is not None or prev.error is not None:
            continue
        prior = system_tokens if replace_history else prev.prompt_tokens + prev.completion_tokens
        total += max(0, min(call.prompt_tokens, prior) - call.cached_tokens)
    return total


def policy_metrics(
    records: Sequence[TaskRecord],
    tasks: Sequence[AgentTask],
    isolated_s: Mapping[str, float],
    *,
    slo_factors: Mapping[str, float] = DEFAULT_SLO_FACTORS,
    preemptions: int | None = None,
    kv_utilization_mean: float | None = None,
    useful_kv_fraction: float | None = None,
) -> PolicyMetrics:
    """`isolated_s` maps session id -> isolated task time; `tasks` are the tasks the records ran."""
    by_session = {t.session_id: t for t in tasks}
    done = [r for r in records if not r.failed]
    times = [r.completion_time_s for r in done]
    calls = [c for r in records for c in r.calls if c.error is None]
    ttfts = [c.ttft_s for c in calls if c.ttft_s is not None]
    prompt = sum(c.prompt_tokens for c in calls)
    met = 0
    for r in done:
        task = by_session[r.session_id]
        factor = slo_factors.get(task.slo_class, slo_factors.get("standard", 1.5))
        met += r.completion_time_s <= factor * isolated_s[r.session_id]
    recomputed = 0
    for r in records:
        task = by_session[r.session_id]
        recomputed += recomputed_tokens(r, task.replace_history, task.system_tokens)
    start = min((r.started_s for r in records), default=0.0)
    end = max((r.finished_s for r in records), default=0.0)
    makespan = max(0.0, end - start)
    tokens = sum(c.prompt_tokens + c.completion_tokens for c in calls)
    return PolicyMetrics(
        tasks=len(records),
        failed=len(records) - len(done),
        calls=len(calls),
        tct_mean_s=statistics.fmean(times) if times else 0.0,
        tct_geomean_s=statistics.geometric_mean(times) if times and min(times) > 0 else 0.0,
        tct_p50_s=percentile(times, 50),
        tct_p99_s=percentile(times, 99),
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p99_s=percentile(ttfts, 99),
        slo_attainment=met / len(records) if records else 0.0,
        prefix_hit_rate=sum(c.cached_tokens for c in calls) / prompt if prompt else 0.0,
        recomputed_prefill_tokens=recomputed,
        throughput_tasks_per_s=len(done) / makespan if makespan > 0 else 0.0,
        throughput_tokens_per_s=tokens / makespan if makespan > 0 else 0.0,
        makespan_s=makespan,
        preemptions=preemptions,
        kv_utilization_mean=kv_utilization_mean,
        useful_kv_fraction=useful_kv_fraction,
    )


def with_speedups(results: Mapping[str, PolicyMetrics], baseline: str) -> dict[str, PolicyMetrics]:
    """Each policy's speedup: the baseline's geometric-mean TCT over its own (above 1: faster)."""
    if baseline not in results:
        raise ValueError(f"baseline {baseline!r} was not run; ran: {', '.join(results)}")
    base = results[baseline].tct_geomean_s
    out = {}
    for name, m in results.items():
        speedup = base / m.tct_geomean_s if m.tct_geomean_s > 0 and base > 0 else math.nan
        out[name] = msgspec.structs.replace(m, speedup_vs_baseline=speedup)
    return out
