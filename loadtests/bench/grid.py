"""`saga bench grid`: every policy across offered load x KV oversubscription, per workload (issue 11's sweep).

Contract, per workload (the same seeded tasks in every run, in the discrete-event cluster):
- Saturating throughput: `session-affinity`'s completed tasks per second of makespan with every task offered
  at once (the closed-loop estimate of `bench des --sweep-load`), at its best population: with few tasks
  the population, not the cluster, limits it, so the workload's tasks are extended (the generators are
  prefix-stable: the first `--tasks` are the runs' tasks) to 2x, 4x, ... `--tasks` while the throughput
  grows (up to `--saturation-max-tasks`), at the full KV; each cell measures it again at its own KV with
  that population (a lower bound there: a smaller KV may saturate with fewer tasks).
- Offered load L: open-loop Poisson arrivals at L x that throughput (the same seeded arrival times for every
  policy of a cell). With `--load-basis full-kv` the load is relative to the full KV's saturating throughput
  in every cell (no saturation run per cell; the rate of a load column stays fixed as the KV shrinks, so
  high oversubscription is reachable: see docs/results/grid.md).
- KV oversubscription: the live tasks' context over the cluster's KV capacity, time-averaged over the run
  (loadtests/des/kv_figures.py). Each cell (L, target) gets its own `kv_scale`: `session-affinity` at L x
  the full-KV saturating throughput measures O1 at kv_scale 1; the first guess is O1 / target (capacity is
  linear in kv_scale). Then `--calibration-steps` times (default 1), for cells not yet within 10% of their
  target: `session-affinity`'s saturating throughput at the guess, its oversubscription at L x that, and a
  new guess along oversubscription ~ kv_scale^-k through the last two measurements (the load is relative to
  the saturation at the cell's own KV, so a smaller KV also lowers the offered rate and the working set:
  oversubscription does not grow as 1 / kv_scale). The cell then runs at L x session-affinity's saturating
  throughput at its final kv_scale and reports the measured oversubscription (of its `session-affinity`
  run) beside the target. kv_scale never goes below the smallest KV per replica that holds the longest
  task context (`note` says when a cell was held there; cells held at the same KV share their runs).
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
import contextlib
import datetime
import time
from pathlib import Path

import msgspec
from rich.console import Console

from loadtests.bench.des import stopped_on_interrupt, worker_pool
from loadtests.bench.grid_runs import (
    REFERENCE,
    CellRun,
    GridPolicy,
    GridReport,
    GridWorkload,
    calibrate,
    kv_for_target,
    map_runs,
    peak_context_tokens,
    run_one,
    saturation_search,
)
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.bench.metrics import geomean, with_speedups
from loadtests.bench.report import machine_description, recorded_command
from loadtests.workloads.catalog import WORKLOADS
from proxy.arg_types import at_least, number_list, output_file, output_folder, positive
from proxy.scheduler import PRESETS
from simulator.cost_model import PROFILES, get_profile


def best_baseline(geo: dict[str, float]) -> str | None:
    """The policy not named `saga` with the lowest (positive) TCT geomean."""
    candidates = {p: g for p, g in geo.items() if p != "saga" and g > 0}
    return min(candidates, key=lambda p: candidates[p]) if candidates else None


def cell_results(
    runs: dict[str, CellRun], isolated: dict[str, float]
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


def run_grid(args: argparse.Namespace, console: Console) -> GridReport:
    workloads = [w for w in args.workloads.split(",") if w]
    policies = [p for p in args.policies.split(",") if p]
    loads, targets = list(args.loads), list(args.oversub)
    for name, values, known in (("workloads", workloads, WORKLOADS), ("policies", policies, tuple(PRESETS))):
        unknown = [v for v in values if v not in known]
        if unknown or not values:
            raise ValueError(f"--{name}: unknown or none: {', '.join(unknown)}; known: {', '.join(known)}")
    if not loads or not targets:  # (each is a positive number: the option's type)
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
    # (Ctrl-C, SIGTERM: the workers stop at once, not once every queued run is done)
    with stopped_on_interrupt(pool) if pool is not None else contextlib.nullcontext():
        for workload in workloads:
            search, population = saturation_search(workload, args, console)
            sat = search[len(population)]
            tasks = population[: args.tasks]
            isolated = {t.session_id: isolated_task_time_s(t, profile) for t in population}
            longest = max(peak_context_tokens(t) for t in population)
            run = dict(common, tasks=tasks, isolated=isolated)
            calibration = [((REFERENCE,), dict(run, rate=x * sat, kv_scale=1.0)) for x in loads]
            cells = []
            for load, full in zip(loads, map_runs(pool, run_one, calibration), strict=True):
                o1 = full.metrics.kv.oversubscription_mean if full.metrics.kv is not None else 0.0
                cells += [kv_for_target(load, target, o1, longest, profile) for target in targets]
            at_once = dict(run, tasks=population, rate=None)
            floor = (longest + profile.block_size) / profile.kv_capacity_tokens
            fixed = sat if args.load_basis == "full-kv" else None
            calibrate(cells, args.calibration_steps, pool, run, at_once, floor, fixed)
            # cells that ended at the same KV (targets past the smallest KV) share their runs
            live = list({(c.load, c.kv_scale): c for c in cells if c.unreachable is None}.values())
            measured = [c for c in live if c.calibration and c.calibration[-1].kv_scale == c.kv_scale]
            fresh = [] if fixed is not None else [c for c in live if all(c is not m for m in measured)]
            saturation = [((REFERENCE,), dict(at_once, kv_scale=c.kv_scale)) for c in fresh]
            for c, s in zip(fresh, map_runs(pool, run_one, saturation), strict=True):
                c.saturation_tasks_per_s = s.metrics.throughput_tasks_per_s
                c.wall_s += s.wall_s
            for c in measured:
                c.saturation_tasks_per_s = c.calibration[-1].saturation_tasks_per_s
            if fixed is not None:
                for c in live:
                    c.saturation_tasks_per_s = fixed
            for c in live:
                c.rate_per_s = c.load * c.saturation_tasks_per_s
            jobs = [((p,), dict(run, rate=c.rate_per_s, kv_scale=c.kv_scale)) for c in live for p in policies]
            results = iter(map_runs(pool, run_one, jobs))
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
    return GridReport(
        command=recorded_command(),
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
        load_basis=args.load_basis,
        wall_s=time.perf_counter() - started,
    )


def add_grid_parser(modes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = modes.add_parser("grid", help="every policy across offered load x KV oversubscription (DES)")
    p.add_argument("--workloads", default="swe,webarena,mixed", help=f"comma-separated of {WORKLOADS}")
    p.add_argument(
        "--loads", type=number_list(positive), default="0.3,0.5,0.7,0.85,0.95,1.1",
        help="of session-affinity's saturation",
    )  # fmt: skip
    p.add_argument(
        "--oversub", type=number_list(positive), default="0.5,1,1.5,2,3",
        help="KV oversubscription targets (time-average)",
    )  # fmt: skip
    p.add_argument(
        "--policies", default=",".join(PRESETS), help=f"comma-separated; known: {', '.join(PRESETS)}"
    )
    p.add_argument("--focus", default=None, help="the heat maps' policy (default saga, else the last policy)")
    p.add_argument("--tasks", type=at_least(1), default=100, help="tasks per run")
    p.add_argument("--replicas", type=at_least(1), default=4, help="simulated replicas")
    p.add_argument(
        "--profile", choices=sorted(PROFILES), default="llama3-8b-h100", help="the replicas' model and GPU"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the tasks")
    p.add_argument(
        "--load-basis",
        choices=("cell", "full-kv"),
        default="cell",
        help="load is relative to session-affinity's saturation at the cell's KV, or at the full KV",
    )
    p.add_argument(
        "--calibration-steps", type=at_least(0), default=1,
        help="refine each cell's kv_scale N times (0: none)",
    )  # fmt: skip
    p.add_argument(
        "--saturation-max-tasks", type=at_least(1), default=None,
        help="largest saturation population (8 x --tasks)",
    )  # fmt: skip
    p.add_argument("--jobs", type=at_least(1), default=1, help="runs in N worker processes")
    p.add_argument("--json", type=output_file, help="write everything as JSON here")
    p.add_argument("--markdown", type=output_file, help="write the tables (and plot links) to this file")
    p.add_argument("--plot-dir", type=output_folder, help="write one heat-map PNG per workload here")
    p.add_argument("--render", type=Path, metavar="JSON", help="only tables and plots of an earlier --json")


def main(args: argparse.Namespace) -> int:
    from loadtests.bench.grid_report import grid_markdown, plot_grid

    console = Console(width=220)
    try:
        if args.render is not None:  # tables and heat maps of an earlier run, nothing run
            report = msgspec.json.decode(args.render.read_bytes(), type=GridReport)
        else:
            report = run_grid(args, console)
    except (ValueError, OSError, msgspec.ValidationError) as e:
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
