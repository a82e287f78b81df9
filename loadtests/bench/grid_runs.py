"""The runs behind `saga bench grid` (loadtests/bench/grid.py): the report's structs, one policy's cluster
run, session-affinity's saturation search and the per-cell KV calibration.

Contract: `run_one` is one deterministic discrete-event run (open loop at `rate`, or every task at once) and
returns what a cell needs (metrics, TCT p90, each finished task's TCT, wall time); it pickles, for worker
processes. `saturation_search`, `kv_for_target`, `calibrate` and `refine` implement the definitions in
loadtests/bench/grid.py's contract.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

import msgspec
from rich.console import Console

from loadtests.bench.des import contender_run
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.bench.metrics import PolicyMetrics, policy_metrics
from loadtests.des.cluster import run_cluster
from loadtests.summary import percentile
from loadtests.tasks import AgentTask
from loadtests.workloads.catalog import generate, with_poisson_arrivals
from simulator.cost_model import Profile, get_profile

REFERENCE = "session-affinity"
CALIBRATION_TOLERANCE = 0.1  # a measured oversubscription within 10% of the target ends the calibration
T = TypeVar("T")


class GridPolicy(msgspec.Struct, kw_only=True):
    metrics: PolicyMetrics  # speedup_vs_baseline, bound and headroom: against session-affinity
    tct_p90_s: float
    speedup_vs_best: float
    oversubscription_mean: float  # measured in this policy's run


class CalibrationPoint(msgspec.Struct, kw_only=True):
    """session-affinity at one kv_scale: its saturating throughput, and the oversubscription it measured at
    the cell's load of that throughput."""

    kv_scale: float
    saturation_tasks_per_s: float
    oversub: float


class GridCell(msgspec.Struct, kw_only=True):
    load: float  # offered load, fraction of session-affinity's saturating throughput
    oversub_target: float
    oversub_measured: float | None = None  # session-affinity's run in this cell
    oversub_at_full_kv: float = 0.0  # calibration: at kv_scale 1
    kv_scale: float = 0.0
    saturation_tasks_per_s: float = 0.0  # session-affinity's, at this kv_scale
    rate_per_s: float = 0.0
    unreachable: str | None = None  # not run, and why
    note: str | None = None  # run, but not at the target, and why
    calibration: list[CalibrationPoint] = msgspec.field(default_factory=list)  # refinement steps
    calibrated: bool = False  # a calibration step measured the target within CALIBRATION_TOLERANCE
    best_baseline: str | None = None
    compared_tasks: int = 0  # finished by every policy: the speedups' set
    wall_s: float = 0.0  # every run of the cell, its saturation run included, one after another
    policies: dict[str, GridPolicy] = msgspec.field(default_factory=dict)


class GridWorkload(msgspec.Struct, kw_only=True):
    workload: str
    tasks: int
    saturation_full_kv_tasks_per_s: float
    saturation_population: int  # tasks offered at once in the saturation runs
    saturation_search: dict[int, float]  # population -> session-affinity's throughput at the full KV
    longest_context_tokens: int  # of the saturation population (a superset of the runs' tasks)
    cells: list[GridCell]


class GridReport(msgspec.Struct, kw_only=True):
    command: str
    machine: str
    date: str
    replicas: int
    profile: str
    seed: int
    policies: list[str]
    focus: str
    loads: list[float]
    oversub: list[float]
    workloads: list[GridWorkload]
    load_basis: str = "cell"  # load relative to the saturation at the cell's KV, or at the full KV
    wall_s: float = 0.0


class CellRun(msgspec.Struct):
    metrics: PolicyMetrics
    tct_p90_s: float
    finished: dict[str, float]  # session id -> TCT of its finished tasks
    wall_s: float


def peak_context_tokens(task: AgentTask) -> int:
    """The longest context any call of the task reaches (prompt plus output), as loadtests/bench/isolated.py
    builds the prompts."""
    peak = task.system_tokens + task.task_tokens
    for step, context in task.call_prompts():
        peak = max(peak, context + step.output_tokens)
    return peak


def kv_for_target(load: float, target: float, at_full_kv: float, longest: int, profile: Profile) -> GridCell:
    """The cell's kv_scale: the oversubscription measured at the full KV over the target, raised to the
    smallest KV per replica that holds the longest task context (plus a block) when it would be smaller."""
    cell = GridCell(load=load, oversub_target=target, oversub_at_full_kv=at_full_kv)
    if not at_full_kv > 0:
        cell.unreachable = "no KV in use at the full KV: nothing to calibrate on"
        return cell
    cell.kv_scale = at_full_kv / target
    smallest = (longest + profile.block_size) / profile.kv_capacity_tokens
    if cell.kv_scale < smallest:
        cell.note = (
            f"the target needs {int(profile.kv_capacity_tokens * cell.kv_scale):,} KV tokens per replica, "
            f"less than the longest task context ({longest:,}): run at the smallest KV that holds it"
        )
        cell.kv_scale = smallest
    return cell


def calibrate(
    cells: list[GridCell],
    steps: int,
    pool: Executor | None,
    run: dict[str, Any],
    at_once: dict[str, Any],
    floor: float,
    fixed_saturation: float | None = None,
) -> None:
    """`steps` calibration steps for every cell still off its target: session-affinity's saturating
    throughput at the cell's kv_scale (`at_once`; `fixed_saturation` instead when the load is relative to
    the full KV's), then its oversubscription at the cell's load of it."""
    for _ in range(steps):
        todo = [c for c in cells if c.unreachable is None and c.note is None and not c.calibrated]
        if fixed_saturation is None:
            sat_runs = [((REFERENCE,), dict(at_once, kv_scale=c.kv_scale)) for c in todo]
            sats = [(r.metrics.throughput_tasks_per_s, r.wall_s) for r in map_runs(pool, run_one, sat_runs)]
        else:
            sats = [(fixed_saturation, 0.0)] * len(todo)
        jobs = [
            ((REFERENCE,), dict(run, rate=c.load * sat, kv_scale=c.kv_scale))
            for c, (sat, _) in zip(todo, sats, strict=True)
        ]
        for c, (sat, wall), probe in zip(todo, sats, map_runs(pool, run_one, jobs), strict=True):
            kv = probe.metrics.kv
            oversub = kv.oversubscription_mean if kv is not None else 0.0
            point = CalibrationPoint(kv_scale=c.kv_scale, saturation_tasks_per_s=sat, oversub=oversub)
            c.wall_s += wall + probe.wall_s
            refine(c, point, floor)


def refine(cell: GridCell, point: CalibrationPoint, floor: float) -> None:
    """One calibration step: keep the cell's kv_scale if `point` measured the target, else move it along
    oversubscription ~ kv_scale^-k, k from this point and the one before (the full KV's first), clamped to
    [0.2, 2]; never below `floor` (the smallest KV that holds the longest context)."""
    cell.calibration.append(point)
    target = cell.oversub_target
    if point.oversub <= 0 or abs(point.oversub / target - 1) <= CALIBRATION_TOLERANCE:
        cell.calibrated = point.oversub > 0
        return
    before = cell.calibration[-2] if len(cell.calibration) > 1 else None
    s0, o0 = (before.kv_scale, before.oversub) if before is not None else (1.0, cell.oversub_at_full_kv)
    k = 1.0
    if o0 > 0 and s0 != point.kv_scale:
        k = math.log(o0 / point.oversub) / math.log(point.kv_scale / s0)
    k = min(max(k, 0.2), 2.0) if math.isfinite(k) else 1.0
    cell.kv_scale = point.kv_scale * (point.oversub / target) ** (1 / k)
    if cell.kv_scale < floor:
        cell.kv_scale = floor
        cell.note = (
            f"calibration asked for kv_scale below {floor:.3g}, the smallest KV that holds the longest task "
            "context: run there"
        )


def run_one(
    policy: str,
    tasks: list[AgentTask],
    *,
    rate: float | None,
    kv_scale: float,
    replicas: int,
    profile: str,
    seed: int,
    isolated: dict[str, float],
) -> CellRun:
    """One policy's cluster run: open loop at `rate`, or closed loop (`rate` None); runs in a worker."""
    started = time.perf_counter()
    arriving = with_poisson_arrivals(tasks, rate, seed=seed) if rate is not None else tasks
    result = run_cluster(
        arriving,
        replicas=replicas,
        profile=profile,
        policy=policy,
        seed=seed,
        kv_scale=kv_scale,
    )
    run = contender_run(result)
    m = policy_metrics(
        run.records,
        arriving,
        isolated,
        preemptions=run.preemptions,
        kv_utilization_mean=run.kv_utilization_mean,
        useful_kv_fraction=run.useful_kv_fraction,
    )
    finished = {r.session_id: r.completion_time_s for r in run.records if not r.failed}
    wall = time.perf_counter() - started
    m = msgspec.structs.replace(m, kv=run.kv, wall_s=wall)
    return CellRun(m, percentile(list(finished.values()), 90), finished, wall)


def map_runs(
    pool: Executor | None, fn: Callable[..., T], jobs: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]
) -> list[T]:
    if pool is None:
        return [fn(*a, **kw) for a, kw in jobs]
    futures = [pool.submit(fn, *a, **kw) for a, kw in jobs]
    return [f.result() for f in futures]


def saturation_search(
    workload: str, args: argparse.Namespace, console: Console
) -> tuple[dict[int, float], list[AgentTask]]:
    """session-affinity's throughput with 1x, 2x, 4x, ... `--tasks` offered at once at the full KV, until it
    stops growing by 2% or the population reaches `--saturation-max-tasks`; the throughputs by population,
    and the tasks of the best population."""
    profile = get_profile(args.profile)
    cap = args.saturation_max_tasks or 8 * args.tasks
    search: dict[int, float] = {}
    best: list[AgentTask] = []
    n = args.tasks
    while True:
        tasks = generate(workload, n, seed=args.seed)
        isolated = {t.session_id: isolated_task_time_s(t, profile) for t in tasks}
        m = run_one(
            REFERENCE, tasks, rate=None, kv_scale=1.0, replicas=args.replicas, profile=args.profile,
            seed=args.seed, isolated=isolated,
        ).metrics  # fmt: skip
        before = max(search.values(), default=0.0)
        search[n] = m.throughput_tasks_per_s
        console.print(f"{workload}: {REFERENCE} with {n} tasks at once: {search[n]:.4f} tasks/s")
        if search[n] > before:
            best = tasks
        if search[n] < 1.02 * before or 2 * n > cap:
            return search, best
        n *= 2
