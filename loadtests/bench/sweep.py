"""`saga bench des --sweep-load R1,R2,...`: each policy at each offered load, to find its peak throughput.

Contract: at every arrival rate (tasks per second, open loop, the same seeded Poisson arrivals for every
policy) each policy runs the same tasks in the discrete-event cluster. A policy's peak throughput is the
highest completed-tasks-per-second it reached at any rate while meeting the SLO for at least `slo_floor`
of its tasks (a policy that "keeps up" by making every task late does not count). The plot shows mean task
completion time against offered load, per policy. Cells are independent: given an executor (`pool`), they run
there at once (`run_policy` must then pickle) and the result is the same as one cell after another. With
`saturation_tasks_per_s` (the baseline's measured saturating throughput) every point also states its offered
load as a fraction of it (`load_fraction`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any

import msgspec

from loadtests.bench.metrics import PolicyMetrics
from loadtests.bench.report import save_plot
from loadtests.tasks import AgentTask
from loadtests.workloads.catalog import with_poisson_arrivals


class SweepPoint(msgspec.Struct):
    rate_per_s: float
    metrics: PolicyMetrics
    load_fraction: float | None = None  # rate over the baseline's saturating throughput


class SweepResult(msgspec.Struct):
    slo_floor: float
    points: dict[str, list[SweepPoint]]  # policy -> one point per rate, in rate order
    peak_throughput_tasks_per_s: dict[str, float]
    saturation_tasks_per_s: float | None = None  # the baseline's, measured (see sweep_des)
    saturation_policy: str | None = None
    # what reproduces it, where and when (set by the CLI before writing the JSON)
    command: str = ""
    machine: str = ""
    date: str = ""


def sweep_load(
    policies: Sequence[str],
    rates: Sequence[float],
    tasks: Sequence[AgentTask],
    run_policy: Callable[[str, list[AgentTask]], PolicyMetrics],
    *,
    seed: int,
    slo_floor: float = 0.9,
    on_point: Callable[[str, SweepPoint], None] | None = None,
    pool: Executor | None = None,
    saturation_tasks_per_s: float | None = None,
    saturation_policy: str | None = None,
) -> SweepResult:
    points: dict[str, list[SweepPoint]] = {p: [] for p in policies}
    cells = [(rate, policy) for rate in sorted(rates) for policy in policies]
    arrivals = {rate: with_poisson_arrivals(tasks, rate, seed=seed) for rate in sorted(rates)}
    futures: list[Future[PolicyMetrics]] = (
        [pool.submit(run_policy, policy, arrivals[rate]) for rate, policy in cells]
        if pool is not None
        else []
    )
    for k, (rate, policy) in enumerate(cells):
        metrics = futures[k].result() if futures else run_policy(policy, arrivals[rate])
        fraction = rate / saturation_tasks_per_s if saturation_tasks_per_s else None
        point = SweepPoint(rate, metrics, fraction)
        points[policy].append(point)
        if on_point is not None:
            on_point(policy, point)
    peak = {
        policy: max(
            (p.metrics.throughput_tasks_per_s for p in pts if p.metrics.slo_attainment >= slo_floor),
            default=0.0,
        )
        for policy, pts in points.items()
    }
    return SweepResult(slo_floor, points, peak, saturation_tasks_per_s, saturation_policy)


def plot_sweep(result: SweepResult, path: str, title: str) -> None:
    def draw(ax: Any) -> None:
        for policy, pts in result.points.items():
            ax.plot(
                [p.rate_per_s for p in pts], [p.metrics.tct_mean_s for p in pts], marker="o", label=policy
            )

    save_plot(path, title, "offered load (tasks per second)", "mean task completion time (s)", draw, log="y")


def sweep_markdown(result: SweepResult) -> str:
    policies = list(result.points)
    first = result.points[policies[0]] if policies else []
    heads = [
        f"TCT mean @ {p.rate_per_s:g}/s" + (f" ({p.load_fraction:.2f}x sat.)" if p.load_fraction else "")
        for p in first
    ]
    lines = [
        "| policy | " + " | ".join(heads) + f" | peak tasks/s (SLO met >= {result.slo_floor:.0%}) |",
        "| --- |" + " ---: |" * (len(heads) + 1),
    ]
    for policy in policies:
        cells = [
            f"{p.metrics.tct_mean_s:.1f} s ({p.metrics.slo_attainment:.0%})" for p in result.points[policy]
        ]
        lines.append(
            f"| {policy} | " + " | ".join(cells) + f" | {result.peak_throughput_tasks_per_s[policy]:.3f} |"
        )
    return "\n".join(lines)
