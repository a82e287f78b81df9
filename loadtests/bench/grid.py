"""`saga bench grid`: every policy across offered load x KV oversubscription, per workload (issue 11's sweep).

Contract, per workload (the same seeded tasks in every run, in the discrete-event cluster):
- Saturating throughput: `session-affinity`'s completed tasks per second of makespan with every task offered
  at once (the closed-loop estimate of `bench des --sweep-load`), at its best population: with few tasks
  the population, not the cluster, limits it, so the workload's tasks are extended (the generators are
  prefix-stable: the first `--tasks` are the runs' tasks) to 2x, 4x, ... `--tasks` while the throughput
  grows (up to `--saturation-max-tasks`), at the full KV; each cell measures it again at its own KV with
  that population (a lower bound there: a smaller KV may saturate with fewer tasks).
- Offered load L: open-loop Poisson arrivals at L x that throughput (the same seeded arrival times for every
  policy of a cell).
- KV oversubscription: the live tasks' context over the cluster's KV capacity, time-averaged over the run
  (loadtests/des/kv_figures.py). A cell (L, target) gets its own `kv_scale` by one calibration step:
  `session-affinity` at L x the saturating throughput of the full KV (kv_scale 1) measures oversubscription
  O1; the cell's kv_scale is O1 / target (capacity is linear in kv_scale), and the cell's load is L x the
  saturating throughput measured again at that kv_scale. The cell reports the measured value (of its
  `session-affinity` run) beside the target. A cell whose KV per replica cannot hold the longest task's
  context is not run: `unreachable` says why.
- Per cell and policy: PolicyMetrics (TCT geomean, p50/p99, throughput, failures with reasons, bound_speedup,
  headroom_captured against `session-affinity`), the TCT p90, and speedups on the tasks every policy of the
  cell finished: against `session-affinity` and against the best baseline (lowest TCT geomean among the
  policies not named `saga`). `session-affinity` always runs: it defines load and speedup.
- With `--jobs N` the runs go to N worker processes, phase by phase (saturation at full KV, calibration,
  saturation per cell, the policies); results do not depend on where a run ran.
Output: JSON (everything, with command, machine and date), a markdown table per workload and, per workload,
one PNG of two heat maps (the focus policy's speedup against `session-affinity` and against the best
baseline; rows = oversubscription, columns = load); see loadtests/bench/grid_report.py.
"""

from __future__ import annotations

import argparse
import datetime
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from rich.console import Console

from loadtests.bench.des import contender_run, worker_pool
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.bench.metrics import PolicyMetrics, geomean, policy_metrics, with_speedups
from loadtests.bench.report import machine_description
from loadtests.des.cluster import run_cluster
from loadtests.summary import percentile
from loadtests.tasks import AgentTask
from loadtests.workloads.catalog import WORKLOADS, generate, with_poisson_arrivals
from proxy.scheduler import PRESETS
from simulator.cost_model import PROFILES, Profile, get_profile

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
    wall_s: float = 0.0


class _Run(msgspec.Struct):
    metrics: PolicyMetrics
    tct_p90_s: float
    finished: dict[str, float]  # session id -> TCT of its finished tasks
    wall_s: float


def peak_context_tokens(task: AgentTask) -> int:
    """The longest context any call of the task reaches (prompt plus output), as loadtests/bench/isolated.py
    builds the prompts."""
    context = task.system_tokens + task.task_tokens
    peak = context
    for step in task.steps:
        peak = max(peak, context + step.output_tokens)
        if task.replace_history:
            context = task.system_tokens + step.observation_tokens
        else:
            context += step.output_tokens
            if step.compact_to_tokens is not None:
                context = min(context, step.compact_to_tokens)
            context += step.observation_tokens
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
) -> None:
    """`steps` calibration steps for every cell still off its target: session-affinity's saturating
    throughput at the cell's kv_scale (`at_once`), then its oversubscription at the cell's load of it."""
    for _ in range(steps):
        todo = [c for c in cells if c.unreachable is None and c.note is None and not c.calibrated]
        sats = _map(pool, run_one, [((REFERENCE,), dict(at_once, kv_scale=c.kv_scale)) for c in todo])
        rates = [c.load * s.metrics.throughput_tasks_per_s for c, s in zip(todo, sats, strict=True)]
        jobs = [
            ((REFERENCE,), dict(run, rate=r, kv_scale=c.kv_scale)) for c, r in zip(todo, rates, strict=True)
        ]
        for c, s, probe in zip(todo, sats, _map(pool, run_one, jobs), strict=True):
            kv = probe.metrics.kv
            point = CalibrationPoint(
                kv_scale=c.kv_scale,
                saturation_tasks_per_s=s.metrics.throughput_tasks_per_s,
                oversub=kv.oversubscription_mean if kv is not None else 0.0,
            )
            c.wall_s += s.wall_s + probe.wall_s
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
) -> _Run:
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
    return _Run(m, percentile(list(finished.values()), 90), finished, wall)


def _map(
    pool: Executor | None, fn: Callable[..., T], jobs: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]
) -> list[T]:
    if pool is None:
        return [fn(*a, **kw) for a, kw in jobs]
    futures = [pool.submit(fn, *a, **kw) for a, kw in jobs]
    return [f.result() for f in futures]


def best_baseline(geo: dict[str, float]) -> str | None:
    """The policy not named `saga` with the lowest (positive) TCT geomean."""
    candidates = {p: g for p, g in geo.items() if p != "saga" and g > 0}
    return min(candidates, key=lambda p: candidates[p]) if candidates else None


def cell_results(
    runs: dict[str, _Run], isolated: dict[str, float]
) -> tuple[dict[str, GridPolicy], str | None, int]:
    """Speedups against session-affinity and the best baseline, on the tasks every policy finished."""
    finished = {p: r.finished for p, r in runs.items()}
    common = sorted(set.intersection(*(set(f) for f in finished.values())))
    geo = {p: geomean([finished[p][sid] for sid in common]) for p in runs}
    metrics = with_speedups({p: r.metrics for p, r in runs.items()}, REFERENCE, finished, isolated)
    best = best_baseline(geo)
    out = {}
    for p, r in runs.items():
        vs_best = geo[best] / geo[p] if best is not None and geo[p] > 0 else float("nan")
        kv = r.metrics.kv
        out[p] = GridPolicy(
            metrics=metrics[p],
            tct_p90_s=r.tct_p90_s,
            speedup_vs_best=vs_best,
            oversubscription_mean=kv.oversubscription_mean if kv is not None else 0.0,
        )
    return out, best, len(common)


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


def run_grid(args: argparse.Namespace, console: Console) -> GridReport:
    workloads = [w for w in args.workloads.split(",") if w]
    policies = [p for p in args.policies.split(",") if p]
    loads = [float(x) for x in args.loads.split(",") if x]
    targets = [float(x) for x in args.oversub.split(",") if x]
    for name, values, known in (("workloads", workloads, WORKLOADS), ("policies", policies, tuple(PRESETS))):
        unknown = [v for v in values if v not in known]
        if unknown or not values:
            raise ValueError(f"--{name}: unknown or none: {', '.join(unknown)}; known: {', '.join(known)}")
    if not loads or not targets or min(loads + targets) <= 0:
        raise ValueError("--loads and --oversub need positive numbers")
    if args.tasks < 1 or args.replicas < 1:
        raise ValueError("--tasks and --replicas must be at least 1")
    if REFERENCE not in policies:
        policies.insert(0, REFERENCE)  # it defines the load and the speedups
    focus = args.focus or ("saga" if "saga" in policies else policies[-1])
    if focus not in policies:
        raise ValueError(f"--focus {focus!r} is not among the policies run")
    profile = get_profile(args.profile)
    common = dict(replicas=args.replicas, profile=args.profile, seed=args.seed)
    started = time.perf_counter()
    pool = worker_pool(args.jobs, 2) if args.jobs > 1 else None
    out = []
    try:
        for workload in workloads:
            search, population = saturation_search(workload, args, console)
            sat = search[len(population)]
            tasks = population[: args.tasks]
            isolated = {t.session_id: isolated_task_time_s(t, profile) for t in population}
            longest = max(peak_context_tokens(t) for t in population)
            run = dict(common, tasks=tasks, isolated=isolated)
            calibration = [((REFERENCE,), dict(run, rate=x * sat, kv_scale=1.0)) for x in loads]
            cells = []
            for load, full in zip(loads, _map(pool, run_one, calibration), strict=True):
                o1 = full.metrics.kv.oversubscription_mean if full.metrics.kv is not None else 0.0
                cells += [kv_for_target(load, target, o1, longest, profile) for target in targets]
            at_once = dict(run, tasks=population, rate=None)
            floor = (longest + profile.block_size) / profile.kv_capacity_tokens
            calibrate(cells, args.calibration_steps, pool, run, at_once, floor)
            # cells that ended at the same KV (targets past the smallest KV) share their runs
            live = list({(c.load, c.kv_scale): c for c in cells if c.unreachable is None}.values())
            fresh = [c for c in live if not (c.calibration and c.calibration[-1].kv_scale == c.kv_scale)]
            saturation = [((REFERENCE,), dict(at_once, kv_scale=c.kv_scale)) for c in fresh]
            for c, s in zip(fresh, _map(pool, run_one, saturation), strict=True):
                c.saturation_tasks_per_s = s.metrics.throughput_tasks_per_s
                c.wall_s += s.wall_s
            for c in live:
                if c in fresh:
                    continue
                c.saturation_tasks_per_s = c.calibration[-1].saturation_tasks_per_s
            for c in live:
                c.rate_per_s = c.load * c.saturation_tasks_per_s
            jobs = [((p,), dict(run, rate=c.rate_per_s, kv_scale=c.kv_scale)) for c in live for p in policies]
            results = iter(_map(pool, run_one, jobs))
            for c in live:
                runs = {p: next(results) for p in policies}
                c.policies, c.best_baseline, c.compared_tasks = cell_results(runs, isolated)
                c.oversub_measured = c.policies[REFERENCE].oversubscription_mean
                c.wall_s += sum(r.wall_s for r in runs.values())
            for c in cells:  # copy the shared runs' figures (the target and the note stay the cell's own)
                ran = next((x for x in live if (x.load, x.kv_scale) == (c.load, c.kv_scale)), None)
                if ran is not None and ran is not c:
                    c.saturation_tasks_per_s, c.rate_per_s = ran.saturation_tasks_per_s, ran.rate_per_s
                    c.policies, c.best_baseline = ran.policies, ran.best_baseline
                    c.compared_tasks, c.oversub_measured = ran.compared_tasks, ran.oversub_measured
            for c in live:
                f = c.policies[focus]
                console.print(
                    f"{workload} load {c.load:g} oversub {c.oversub_target:g} "
                    f"(measured {c.oversub_measured:.2f}, kv_scale {c.kv_scale:.3g}): {focus} "
                    f"{f.metrics.speedup_vs_baseline:.2f}x vs {REFERENCE}, {f.speedup_vs_best:.2f}x vs "
                    f"{c.best_baseline}; {c.wall_s:.0f} s of runs"
                )
            for c in cells:
                if c.unreachable or c.note:
                    console.print(
                        f"{workload} load {c.load:g} oversub {c.oversub_target:g}: {c.unreachable or c.note}"
                    )
            out.append(GridWorkload(
                workload=workload, tasks=len(tasks), saturation_full_kv_tasks_per_s=sat,
                saturation_population=len(population), saturation_search=search,
                longest_context_tokens=longest, cells=cells,
            ))  # fmt: skip
    finally:
        if pool is not None:
            pool.shutdown()
    return GridReport(
        command="saga " + shlex.join(sys.argv[1:]) if sys.argv[0].endswith("saga") else shlex.join(sys.argv),
        machine=machine_description(),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        replicas=args.replicas,
        profile=args.profile,
        seed=args.seed,
        policies=policies,
        focus=focus,
        loads=loads,
        oversub=targets,
        workloads=out,
        wall_s=time.perf_counter() - started,
    )


def add_grid_parser(modes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = modes.add_parser("grid", help="every policy across offered load x KV oversubscription (DES)")
    p.add_argument("--workloads", default="swe,webarena,mixed", help=f"comma-separated of {WORKLOADS}")
    p.add_argument("--loads", default="0.3,0.5,0.7,0.85,0.95,1.1", help="of session-affinity's saturation")
    p.add_argument("--oversub", default="0.5,1,1.5,2,3", help="KV oversubscription targets (time-average)")
    p.add_argument(
        "--policies", default=",".join(PRESETS), help=f"comma-separated; known: {', '.join(PRESETS)}"
    )
    p.add_argument("--focus", default=None, help="the heat maps' policy (default saga, else the last policy)")
    p.add_argument("--tasks", type=int, default=100, help="tasks per run")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--profile", choices=sorted(PROFILES), default="llama3-8b-h100")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--calibration-steps", type=int, default=1, help="refine each cell's kv_scale N times (0: none)"
    )
    p.add_argument(
        "--saturation-max-tasks", type=int, default=None, help="largest saturation population (8 x --tasks)"
    )
    p.add_argument("--jobs", type=int, default=1, help="runs in N worker processes")
    p.add_argument("--json", type=Path, help="write everything as JSON here")
    p.add_argument("--markdown", type=Path, help="write the tables (and plot links) to this file")
    p.add_argument("--plot-dir", type=Path, help="write one heat-map PNG per workload here")


def main(args: argparse.Namespace) -> int:
    from loadtests.bench.grid_report import grid_markdown, plot_grid

    console = Console(width=220)
    try:
        report = run_grid(args, console)
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    plots: dict[str, Path] = {}
    if args.plot_dir is not None:
        args.plot_dir.mkdir(parents=True, exist_ok=True)
        for w in report.workloads:
            plots[w.workload] = plot_grid(report, w, args.plot_dir / f"grid-{w.workload}.png")
    text = grid_markdown(report, plots, relative_to=args.markdown.parent if args.markdown else None)
    console.print(text, markup=False, highlight=False)
    if args.json:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
        console.print(f"results: {args.json}")
    if args.markdown:
        args.markdown.write_text(text + "\n")
        console.print(f"tables: {args.markdown}")
    return 0
