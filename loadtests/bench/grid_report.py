"""Tables and heat maps of `saga bench grid` (loadtests/bench/grid.py).

Contract: `grid_markdown(report, plots)` is a pure function of the report: per workload, one table of every
policy's TCT geomean and speedup against `session-affinity` in each cell, and one of the focus policy's
figures (p90, throughput, failures, speedup against the best baseline, bound and headroom). `plot_grid`
writes one PNG per workload: two heat maps (rows = oversubscription target, columns = offered load, cell
text = the focus policy's speedup and the measured oversubscription, * where held at the smallest KV that
holds the longest context; green faster, red slower, grey = not run).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from loadtests.bench.grid_runs import REFERENCE, GridCell, GridReport, GridWorkload


def _x(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def _cell_head(c: GridCell) -> str:
    measured = f"{c.oversub_measured:.2f}" if c.oversub_measured is not None else "-"
    mark = "*" if c.note else ""
    return f"| {c.load:g} | {c.oversub_target:g} ({measured}){mark} | {c.kv_scale:.3g} | {c.rate_per_s:.3g} |"


def workload_markdown(report: GridReport, w: GridWorkload, plot: str | None = None) -> str:
    focus, policies = report.focus, report.policies
    lines = [
        f"### {w.workload}: {w.tasks} tasks per run, {report.replicas} x {report.profile}",
        "",
        f"`{REFERENCE}` saturates at {w.saturation_full_kv_tasks_per_s:.4f} tasks/s with the full KV; the "
        f"longest task context is {w.longest_context_tokens:,} tokens. Cells: TCT geomean in seconds "
        f"(speedup against `{REFERENCE}`); oversubscription target (measured); * the target needs less KV "
        "per replica than the longest task context: run at the smallest KV that holds it.",
        "",
        "| load | oversub | kv_scale | tasks/s | " + " | ".join(policies) + " | best baseline |",
        "| ---: | ---: | ---: | ---: |" + " ---: |" * len(policies) + " --- |",
    ]
    for c in w.cells:
        if c.unreachable:
            lines.append(_cell_head(c) + f" not run: {c.unreachable} |" + " |" * len(policies))
            continue
        cols = []
        for p in policies:
            m = c.policies[p].metrics
            cols.append(f"{m.tct_geomean_s:.0f} ({_x(m.speedup_vs_baseline)})")
        lines.append(_cell_head(c) + " " + " | ".join(cols) + f" | {c.best_baseline} |")
    lines += [
        "",
        f"`{focus}` in each cell (speedups on the tasks every policy finished; bound and headroom against "
        f"`{REFERENCE}`):",
        "",
        "| load | oversub | kv_scale | tasks/s | TCT geomean | p90 | throughput | failed | vs "
        f"{REFERENCE} | vs best | bound | headroom | runs' wall |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in w.cells:
        if c.unreachable:
            lines.append(_cell_head(c) + " not run |" + " |" * 8)
            continue
        f = c.policies[focus]
        m = f.metrics
        failed = str(m.failed)
        if m.failed_reasons:
            failed += " (" + "; ".join(f"{n}x {r}" for r, n in m.failed_reasons.items()) + ")"
        headroom = f"{m.headroom_captured:.0%}" if m.headroom_captured is not None else "n/a"
        lines.append(
            _cell_head(c) + f" {m.tct_geomean_s:.0f} s | {f.tct_p90_s:.0f} s | "
            f"{m.throughput_tasks_per_s:.4f}/s | {failed} | {_x(m.speedup_vs_baseline)} | "
            f"{_x(f.speedup_vs_best)} ({c.best_baseline}) | {_x(m.bound_speedup)} | {headroom} | "
            f"{c.wall_s:.0f} s |"
        )
    if plot:
        lines += ["", f"![{focus} speedup heat maps, {w.workload}]({plot})"]
    return "\n".join(lines)


def grid_markdown(report: GridReport, plots: dict[str, Path], *, relative_to: Path | None = None) -> str:
    cells = [c for w in report.workloads for c in w.cells if not c.unreachable]
    per_cell = sum(c.wall_s for c in cells) / len(cells) if cells else 0.0
    lines = [
        f"## Load x KV oversubscription grid: `{report.focus}` against the baselines",
        "",
        f"- Command: `{report.command}`",
        f"- Machine: {report.machine}",
        f"- Date: {report.date}",
        f"- Policies: {', '.join(report.policies)}; seed {report.seed}",
        f"- Load basis: {report.load_basis} (load = offered rate / session-affinity's saturating throughput "
        + ("at each cell's own KV)" if report.load_basis == "cell" else "at the full KV)"),
        f"- Wall time: {report.wall_s:.0f} s in all; a cell's runs take {per_cell:.0f} s one after another",
        "",
    ]
    for w in report.workloads:
        plot = plots.get(w.workload)
        link = None
        if plot is not None:
            link = os.path.relpath(plot, relative_to) if relative_to is not None else str(plot)
        lines += [workload_markdown(report, w, link), ""]
    return "\n".join(lines)


def plot_grid(report: GridReport, w: GridWorkload, path: Path) -> Path:
    """Two heat maps of the focus policy's speedup (against session-affinity, against the best baseline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    loads, targets = report.loads, report.oversub
    by_key = {(c.load, c.oversub_target): c for c in w.cells}
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.6 * len(targets) + 2.4))
    for ax, (title, against) in zip(
        axes, ((f"vs {REFERENCE}", "reference"), ("vs the best baseline", "best")), strict=True
    ):
        grid = [[math.nan] * len(loads) for _ in targets]
        measured = [[""] * len(loads) for _ in targets]
        for i, target in enumerate(targets):
            for j, load in enumerate(loads):
                c = by_key.get((load, target))
                if c is None or c.unreachable or report.focus not in c.policies:
                    continue
                f = c.policies[report.focus]
                grid[i][j] = f.metrics.speedup_vs_baseline if against == "reference" else f.speedup_vs_best
                if c.oversub_measured is not None:
                    measured[i][j] = f"\nover. {c.oversub_measured:.2f}" + ("*" if c.note else "")
        cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="lightgrey")
        image = ax.imshow(grid, cmap=cmap, norm=LogNorm(vmin=0.5, vmax=2.0), origin="lower", aspect="auto")
        for i in range(len(targets)):
            for j in range(len(loads)):
                value = grid[i][j]
                text = "n/a" if math.isnan(value) else f"{value:.2f}x{measured[i][j]}"
                ax.text(j, i, text, ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(loads)), [f"{x:g}" for x in loads])
        ax.set_yticks(range(len(targets)), [f"{x:g}" for x in targets])
        basis = "at each cell's KV" if report.load_basis == "cell" else "at the full KV"
        ax.set_xlabel(f"offered load (of {REFERENCE}'s saturating throughput {basis})")
        ax.set_ylabel("KV oversubscription target")
        ax.set_title(f"{report.focus} {title}", fontsize=10)
        bar = fig.colorbar(image, ax=ax, label="TCT geomean speedup")
        bar.minorticks_off()
        ticks = [0.5, 0.67, 1.0, 1.5, 2.0]
        bar.set_ticks(ticks, labels=[f"{t:g}x" for t in ticks])
    fig.suptitle(
        f"{w.workload}: {w.tasks} tasks, {report.replicas} x {report.profile} (cells: speedup, measured "
        "oversubscription; * at the smallest KV that holds the longest context)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
