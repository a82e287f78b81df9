"""Runs contenders (policies in the discrete-event cluster, or routers over HTTP) on the same tasks and
assembles the side-by-side report.

Contract: `compare(contenders, run_one, tasks, ...)` calls `run_one(name)` for each contender in order (each
must start from a fresh fleet), turns what it returns into `PolicyMetrics` against the tasks' isolated
times, sets speedups against `baseline` (the first contender when the baseline did not run), and records
contenders that could not run in `missing` with the reason `run_one` raised (`ContenderUnavailable`).
Speedups, the bound and the headroom are computed on the tasks every contender finished; when contenders
finished different sets of tasks, the report says so in `warnings` (and `compared_tasks` is the common set).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from loadtests.bench.capacity_bound import capacity_bound_geomean_s
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.bench.metrics import (
    DEFAULT_SLO_FACTORS,
    PolicyMetrics,
    common_survivors,
    isolated_split,
    policy_metrics,
    with_speedups,
)
from loadtests.bench.report import BenchReport, RunMeta
from loadtests.des.result import KvFigures
from loadtests.tasks import AgentTask, TaskRecord
from simulator.cost_model import get_profile


class ContenderUnavailable(RuntimeError):
    """This contender cannot run here; the message says why (reported, not fatal)."""


class ContenderRun(msgspec.Struct):
    records: list[TaskRecord]
    preemptions: int | None = None
    kv_utilization_mean: float | None = None
    useful_kv_fraction: float | None = None
    kv: KvFigures | None = None
    replica_lag_s: float | None = None  # simulated replicas over HTTP: wall seconds behind their clock


RunOne = Callable[[str], Awaitable[ContenderRun]]


async def compare(
    contenders: Sequence[str],
    run_one: RunOne,
    tasks: Sequence[AgentTask],
    *,
    baseline: str,
    meta: RunMeta,
    slo_factors: dict[str, float] | None = None,
    on_result: Callable[[str, PolicyMetrics | str], None] | None = None,
) -> tuple[BenchReport, dict[str, list[float]]]:
    """The report, and each contender's task completion times (for the plot)."""
    profile = get_profile(meta.profile)
    isolated = {t.session_id: isolated_task_time_s(t, profile) for t in tasks}
    results: dict[str, PolicyMetrics] = {}
    missing: dict[str, str] = {}
    times: dict[str, list[float]] = {}
    finished: dict[str, dict[str, float]] = {}
    for name in contenders:
        started = time.monotonic()
        try:
            run = await run_one(name)
        except ContenderUnavailable as e:
            missing[name] = str(e)
            if on_result is not None:
                on_result(name, str(e))
            continue
        m = policy_metrics(
            run.records,
            tasks,
            isolated,
            slo_factors=slo_factors or DEFAULT_SLO_FACTORS,
            preemptions=run.preemptions,
            kv_utilization_mean=run.kv_utilization_mean,
            useful_kv_fraction=run.useful_kv_fraction,
        )
        results[name] = msgspec.structs.replace(
            m, wall_s=time.monotonic() - started, kv=run.kv, replica_lag_s=run.replica_lag_s
        )
        finished[name] = {r.session_id: r.completion_time_s for r in run.records if not r.failed}
        times[name] = list(finished[name].values())
        if on_result is not None:
            on_result(name, results[name])
    if not results:
        raise ContenderUnavailable(
            "no contender could run: " + "; ".join(f"{k}: {v}" for k, v in missing.items())
        )
    base = baseline if baseline in results else next(iter(results))
    common = common_survivors(finished)
    capacity = next((m.kv.kv_capacity_tokens for m in results.values() if m.kv is not None), 0)
    compared = [t for t in tasks if t.session_id in common]
    bound_s = capacity_bound_geomean_s(compared, isolated, profile, capacity)
    policies = with_speedups(results, base, finished, isolated, capacity_bound_s=bound_s)
    report = BenchReport(
        baseline=base,
        policies=policies,
        meta=meta,
        missing=missing,
        compared_tasks=len(common),
        warnings=survivor_warnings(policies, finished, common),
        isolated_split=isolated_split(compared, profile),
    )
    return report, times


def survivor_warnings(
    policies: dict[str, PolicyMetrics], finished: dict[str, dict[str, float]], common: set[str]
) -> list[str]:
    """What a reader must know before comparing the figures (failure counts and reasons are in the
    metrics): a policy that finished nothing, and different survivor sets."""
    warnings = []
    for name, m in policies.items():
        if m.tasks and m.failed == m.tasks:
            warnings.append(f"{name}: every task failed; its completion-time figures are empty")
    if len({frozenset(f) for f in finished.values()}) > 1:
        warnings.append(
            "policies finished different sets of tasks: TCT mean/geomean/percentiles are over each policy's "
            f"own survivors; speedup, bound and headroom are on the {len(common)} tasks every policy finished"
        )
    return warnings
