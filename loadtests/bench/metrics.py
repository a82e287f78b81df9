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
- failed tasks: counted, and by reason (`failed_reasons`: the first failed call's error with its numbers
  replaced by N, so the same failure on different lengths counts once), never silently left out.
- service time: a finished task's TCT minus its own client-side waits (every step's tool or think time),
  the part a scheduler can move; TTFT is per call; per-turn latency (first call of a turn sent to its last
  call answered) where the tasks mark turns (`Step.turn`), else None.
- the physical limit: `tct_isolated_geomean_s`, the geometric mean of the isolated times of the tasks whose
  TCT the geomean covers. `with_speedups` adds, on the set of tasks every policy finished (the common
  survivors, all tasks when none failed): `speedup_vs_baseline` = baseline geomean / the policy's,
  `bound_speedup` = baseline geomean / isolated geomean (no scheduler can beat it), and
  `headroom_captured` = log(speedup) / log(bound) (None when bound < 1.01: no headroom worth measuring).
Engine-side figures (preemptions, KV utilisation, useful KV fraction, and in `kv` the KV oversubscription,
offload traffic and retained block-seconds used or wasted: loadtests/des/result.py KvFigures) come from the
runner and are passed through; None means the runner could not measure them.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence

import msgspec

from loadtests.bench.isolated import isolated_time_split_s
from loadtests.des.result import KvFigures
from loadtests.summary import failed_reasons, percentile
from loadtests.tasks import AgentTask, TaskRecord
from simulator.cost_model import Profile

DEFAULT_SLO_FACTORS: dict[str, float] = {"standard": 1.5, "interactive": 1.2, "batch": 3.0}
# Below this bound there is no headroom to measure: log(speedup) / log(bound) would only amplify noise.
MIN_BOUND = 1.01


class TimeSplit(msgspec.Struct, kw_only=True):
    """Where a finished task's time goes, mean seconds per task. Queue parts are known only in the
    discrete-event cluster (from sending a call to the engine first scheduling it: the proxy's queue and the
    engine's); where they are not (HTTP runs) they are None and `prefill_s` is the time to first token; where
    a call's first token is not known either (a non-streaming call over HTTP: its first token comes with its
    end), `prefill_s` and `decode_s` are None too, rather than count a whole answer as prefill.
    `waits_s` is the rest of the task's completion time: its tool and think time, and the client's own
    gaps between calls."""

    first_queue_s: float | None  # the task's first call: waiting for admission and the engine
    later_queue_s: float | None  # its later calls (a continuing workflow waiting: what SAGA cuts)
    prefill_s: float | None  # scheduled to first token (re-prefill of evicted history counts here)
    decode_s: float | None  # first token to the end of each answer
    waits_s: float


def time_split(records: Sequence[TaskRecord]) -> TimeSplit | None:
    """The mean `TimeSplit` over finished tasks; None when none finished."""
    done = [r for r in records if not r.failed]
    if not done:
        return None
    queued = all(c.queue_s is not None for r in done for c in r.calls)
    timed = all(c.ttft_s is not None for r in done for c in r.calls)
    first = later = prefill = decode = waits = 0.0
    for r in done:
        busy = 0.0
        for i, c in enumerate(r.calls):
            ttft = c.ttft_s if c.ttft_s is not None else c.latency_s
            queue = c.queue_s or 0.0
            if i == 0:
                first += queue
            else:
                later += queue
            prefill += ttft - queue
            decode += c.latency_s - ttft
            busy += c.latency_s
        waits += r.completion_time_s - busy
    n = len(done)
    return TimeSplit(
        first_queue_s=first / n if queued else None,
        later_queue_s=later / n if queued else None,
        prefill_s=prefill / n if timed else None,
        decode_s=decode / n if timed else None,
        waits_s=waits / n,
    )


def isolated_split(tasks: Sequence[AgentTask], profile: Profile) -> TimeSplit | None:
    """The mean `TimeSplit` of `tasks` each alone on an idle replica (no queue); None for no tasks."""
    if not tasks:
        return None
    parts = [isolated_time_split_s(t, profile) for t in tasks]
    n = len(parts)
    return TimeSplit(
        first_queue_s=0.0,
        later_queue_s=0.0,
        prefill_s=sum(p[0] for p in parts) / n,
        decode_s=sum(p[1] for p in parts) / n,
        waits_s=sum(p[2] for p in parts) / n,
    )


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
    # `saga bench live` on simulated replicas: the most wall seconds one fell behind its clock (busy host)
    replica_lag_s: float | None = None
    speedup_vs_baseline: float = 1.0
    wall_s: float = 0.0
    failed_reasons: dict[str, int] = msgspec.field(default_factory=dict)
    ttft_mean_s: float = 0.0
    service_mean_s: float = 0.0
    service_geomean_s: float = 0.0
    service_p50_s: float = 0.0
    service_p99_s: float = 0.0
    turns: int | None = None  # complete turns measured; None: the tasks mark no turns
    turn_latency_p50_s: float | None = None
    turn_latency_p99_s: float | None = None
    tct_isolated_geomean_s: float = 0.0
    bound_speedup: float | None = None
    headroom_captured: float | None = None
    # The same against a bound that also counts the cluster's KV capacity (loadtests/bench/capacity_bound.py;
    # open-loop discrete-event runs): baseline geomean / that bound, and log(speedup) / log(it).
    capacity_bound_speedup: float | None = None
    capacity_headroom_captured: float | None = None
    kv: KvFigures | None = None  # discrete-event runs: KV oversubscription and CPU offload traffic
    time_split: TimeSplit | None = None  # where a finished task's time goes, mean seconds per task

    @property
    def kv_oversubscription_peak(self) -> float | None:
        return self.kv.oversubscription_peak if self.kv is not None else None

    @property
    def retained_block_s_wasted(self) -> float | None:
        """Retained block-seconds spent on sessions that did not return within the TTL (DES runs)."""
        return self.kv.retained_block_s_wasted if self.kv is not None else None

    @property
    def offload_loaded_tokens(self) -> int | None:
        kv = self.kv
        return kv.offload_loaded_tokens if kv is not None and kv.offload_gib_per_replica else None


def recomputed_tokens(record: TaskRecord, task: AgentTask) -> int:
    total = 0
    calls = record.calls
    for prev, call in itertools.pairwise(calls):
        if call.error is not None or prev.error is not None:
            continue
        prior = prev.prompt_tokens + prev.completion_tokens
        if task.replace_history:
            prior = task.system_tokens
        elif (compact_to := task.steps[prev.step].compact_to_tokens) is not None:
            prior = min(prior, compact_to)  # the rest was dropped on purpose, not lost
        total += max(0, min(call.prompt_tokens, prior) - call.cached_tokens)
    return total


def service_time_s(record: TaskRecord, task: AgentTask) -> float:
    """A finished task's completion time less its own waits (tool and think times)."""
    return max(0.0, record.completion_time_s - task.wait_s)


def turn_latencies_s(record: TaskRecord, task: AgentTask) -> list[float] | None:
    """Each complete turn's latency: its first call sent to its last call answered (tool waits inside the
    turn included, the person's think time after it not). None when the task marks no turns."""
    if not task.steps or task.steps[0].turn is None:
        return None
    spans: dict[int, list[float]] = {}
    counts: dict[int, int] = {}
    for step in task.steps:
        counts[step.turn or 0] = counts.get(step.turn or 0, 0) + 1
    seen: dict[int, int] = {}
    for c in record.calls:
        if c.error is not None:
            break
        turn = task.steps[c.step].turn or 0
        span = spans.setdefault(turn, [c.started_s, c.started_s + c.latency_s])
        span[1] = c.started_s + c.latency_s
        seen[turn] = seen.get(turn, 0) + 1
    return [end - start for turn, (start, end) in spans.items() if seen[turn] == counts[turn]]


def geomean(values: Sequence[float]) -> float:
    """Geometric mean; 0.0 when empty or any value is not positive."""
    return statistics.geometric_mean(values) if values and min(values) > 0 else 0.0


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
    service = [service_time_s(r, by_session[r.session_id]) for r in done]
    every = [x for r in records for x in r.and_subagents()]  # per-call figures count subagents' calls too
    every_task = {x.session_id: x for t in tasks for x in t.and_subagents()}
    calls = [c for r in every for c in r.calls if c.error is None]
    # a whole (non-streamed) answer's first token comes with its end: its latency stands for its TTFT
    ttfts = [c.ttft_s if c.ttft_s is not None else c.latency_s for c in calls]
    prompt = sum(c.prompt_tokens for c in calls)
    met = 0
    for r in done:
        task = by_session[r.session_id]
        factor = slo_factors.get(task.slo_class, slo_factors.get("standard", 1.5))
        met += r.completion_time_s <= factor * isolated_s[r.session_id]
    recomputed = sum(recomputed_tokens(r, every_task[r.session_id]) for r in every)
    per_task = [turn_latencies_s(r, by_session[r.session_id]) for r in records]
    marked = [lat for lat in per_task if lat is not None]
    turns = [t for lat in marked for t in lat] if marked else None
    start = min((r.started_s for r in records), default=0.0)
    end = max((r.finished_s for r in records), default=0.0)
    makespan = max(0.0, end - start)
    tokens = sum(c.prompt_tokens + c.completion_tokens for c in calls)
    return PolicyMetrics(
        tasks=len(records),
        failed=len(records) - len(done),
        calls=len(calls),
        tct_mean_s=statistics.fmean(times) if times else 0.0,
        tct_geomean_s=geomean(times),
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
        failed_reasons=failed_reasons(records),
        ttft_mean_s=statistics.fmean(ttfts) if ttfts else 0.0,
        service_mean_s=statistics.fmean(service) if service else 0.0,
        service_geomean_s=geomean(service),
        service_p50_s=percentile(service, 50),
        service_p99_s=percentile(service, 99),
        turns=len(turns) if turns is not None else None,
        turn_latency_p50_s=percentile(turns, 50) if turns else None,
        turn_latency_p99_s=percentile(turns, 99) if turns else None,
        tct_isolated_geomean_s=geomean([isolated_s[r.session_id] for r in done]),
        time_split=time_split(records),
    )


def common_survivors(finished: Mapping[str, Mapping[str, float]]) -> set[str]:
    """The tasks every policy finished (`finished`: policy -> session id -> TCT of its finished tasks)."""
    sets = [set(times) for times in finished.values()]
    return set.intersection(*sets) if sets else set()


def with_speedups(
    results: Mapping[str, PolicyMetrics],
    baseline: str,
    finished: Mapping[str, Mapping[str, float]] | None = None,
    isolated_s: Mapping[str, float] | None = None,
    capacity_bound_s: float | None = None,
) -> dict[str, PolicyMetrics]:
    """Each policy's speedup (the baseline's geometric-mean TCT over its own; above 1: faster), the bound and
    the headroom captured, and the same against `capacity_bound_s` (a geomean TCT no schedule can beat on
    this cluster) when given. With `finished` and `isolated_s` every figure is on the common survivors;
    without, on each policy's own finished tasks (the same set when none failed)."""
    if baseline not in results:
        raise ValueError(f"baseline {baseline!r} was not run; ran: {', '.join(results)}")
    if finished is not None and isolated_s is not None:
        common = sorted(common_survivors(finished))
        geo = {name: geomean([finished[name][sid] for sid in common]) for name in results}
        isolated = geomean([isolated_s[sid] for sid in common])
    else:
        geo = {name: m.tct_geomean_s for name, m in results.items()}
        isolated = results[baseline].tct_isolated_geomean_s
    base = geo[baseline]
    bound = base / isolated if base > 0 and isolated > 0 else None
    capacity_bound = base / capacity_bound_s if base > 0 and capacity_bound_s else None
    out = {}
    for name, m in results.items():
        speedup = base / geo[name] if geo[name] > 0 and base > 0 else math.nan
        out[name] = msgspec.structs.replace(
            m,
            speedup_vs_baseline=speedup,
            bound_speedup=bound,
            headroom_captured=_headroom(speedup, bound),
            capacity_bound_speedup=capacity_bound,
            capacity_headroom_captured=_headroom(speedup, capacity_bound),
        )
    return out


def _headroom(speedup: float, bound: float | None) -> float | None:
    if bound is None or bound < MIN_BOUND or not speedup > 0:  # NaN compares False
        return None
    return math.log(speedup) / math.log(bound)
