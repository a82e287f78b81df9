"""A benchmark's results as a table on the terminal, JSON, a markdown section and a plot.

Contract: `BenchReport` is the JSON shape (`{"baseline", "policies": {name: PolicyMetrics...}, "meta",
"missing", "compared_tasks", "warnings"}`); `append_markdown` appends one self-contained section (title,
command, machine, date, table, failures and warnings, plot link) to a markdown file and never rewrites what
is there; `plot_completion_times` writes a PNG of each policy's task-completion-time distribution (empirical
CDF, log time axis). Failed tasks are never hidden: the table counts them, `failure_lines` gives their
reasons, and the warnings say when policies finished different sets of tasks.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
from rich.table import Table

from loadtests.bench.metrics import PolicyMetrics, TimeSplit
from saga_native import build_description


class RunMeta(msgspec.Struct, kw_only=True):
    title: str
    command: str
    date: str
    machine: str
    mode: str  # "des" or "live"
    workload: str
    replicas: int
    profile: str
    tasks: int
    seed: int
    notes: str = ""


class BenchReport(msgspec.Struct, kw_only=True):
    baseline: str
    policies: dict[str, PolicyMetrics]
    meta: RunMeta
    # Policies or peers asked for but not run, with the reason (e.g. a peer router not installed).
    missing: dict[str, str] = msgspec.field(default_factory=dict)
    # The tasks every policy finished: what speedups, the bound and the headroom are computed on.
    compared_tasks: int = 0
    warnings: list[str] = msgspec.field(default_factory=list)
    # Where the compared tasks' time would go alone on an idle replica (no queue), mean seconds per task.
    isolated_split: TimeSplit | None = None


def recorded_command(argv: Sequence[str] | None = None, joined: Sequence[str] = ()) -> str:
    """The command line a result records, as a user would type it again: `saga ...` whether it ran as the
    `saga` script or as `python -m proxy.cli`; anything else verbatim. The options in `joined` are written
    `--option=value`: a value that begins with "-" (`--saga-args "--policy x"`) reads back only so."""
    argv = list(sys.argv if argv is None else argv)
    for i in range(len(argv) - 2, -1, -1):
        if argv[i] in joined:
            argv[i : i + 2] = [f"{argv[i]}={argv[i + 1]}"]
    if argv and argv[0].endswith(("saga", "proxy/cli.py")):
        return shlex.join(["saga", *argv[1:]])
    return shlex.join(argv)


def machine_description() -> str:
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    python = platform.python_version()
    system = f"{platform.machine()} {os.cpu_count()} cores{mem}, {platform.system()}, Python {python}"
    return f"{system}, {build_description()}"


def _fmt(value: float | int | None, kind: str) -> str:
    if value is None or value != value:  # None, or NaN (a speedup with no common survivors)
        return "n/a"
    if kind == "pct":
        return f"{value:.1%}"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "int":
        return f"{int(value):,}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("failed", "failed", "int"),
    ("TCT mean s", "tct_mean_s", "s"),
    ("geomean", "tct_geomean_s", "s"),
    ("p50", "tct_p50_s", "s"),
    ("p99", "tct_p99_s", "s"),
    ("service geomean", "service_geomean_s", "s"),
    ("isolated geomean", "tct_isolated_geomean_s", "s"),
    ("TTFT mean", "ttft_mean_s", "s"),
    ("TTFT p50", "ttft_p50_s", "s"),
    ("TTFT p99", "ttft_p99_s", "s"),
    ("turn p50", "turn_latency_p50_s", "s"),
    ("turn p99", "turn_latency_p99_s", "s"),
    ("SLO met", "slo_attainment", "pct"),
    ("prefix hit", "prefix_hit_rate", "pct"),
    ("recomputed tok", "recomputed_prefill_tokens", "int"),
    ("preempt", "preemptions", "int"),
    ("KV util", "kv_utilization_mean", "pct"),
    ("useful KV", "useful_kv_fraction", "pct"),
    ("KV oversub", "kv_oversubscription_peak", "x"),
    ("CPU loaded tok", "offload_loaded_tokens", "int"),
    ("tasks/s", "throughput_tasks_per_s", "s"),
    ("tok/s", "throughput_tokens_per_s", "int"),
    ("speedup", "speedup_vs_baseline", "x"),
    ("bound", "bound_speedup", "x"),
    ("KV bound", "capacity_bound_speedup", "x"),
    ("headroom", "headroom_captured", "pct"),
)
# Shown only when some policy has a value (turns exist only where the tasks mark them).
OPTIONAL_FIELDS = frozenset({"turn_latency_p50_s", "turn_latency_p99_s", "capacity_bound_speedup"})


# The terminal splits the columns in two tables (task completion against its limit; calls, cache and engine)
# so that each stays readable; the markdown section has them all in one.
COMPLETION_FIELDS = frozenset(
    {
        "failed", "tct_mean_s", "tct_geomean_s", "tct_p50_s", "tct_p99_s", "service_geomean_s",
        "tct_isolated_geomean_s", "slo_attainment", "throughput_tasks_per_s", "speedup_vs_baseline",
        "bound_speedup", "capacity_bound_speedup", "headroom_captured",
    }
)  # fmt: skip


def _columns(report: BenchReport, part: str = "all") -> list[tuple[str, str, str]]:
    return [
        c
        for c in COLUMNS
        if (
            c[1] not in OPTIONAL_FIELDS or any(getattr(m, c[1]) is not None for m in report.policies.values())
        )
        and (part == "all" or (c[1] in COMPLETION_FIELDS) == (part == "completion"))
    ]


def _rows(report: BenchReport, part: str = "all", with_ok: bool = True) -> list[list[str]]:
    rows = []
    columns = _columns(report, part)
    for name, m in report.policies.items():
        label = f"{name} (baseline)" if name == report.baseline else name
        ok = [f"{m.tasks - m.failed}/{m.tasks}"] if with_ok else []
        rows.append([label, *ok, *(_fmt(getattr(m, field), kind) for _, field, kind in columns)])
    return rows


def failure_lines(report: BenchReport) -> list[str]:
    """One line per policy with failed tasks: how many, by reason."""
    lines = []
    for name, m in report.policies.items():
        if m.failed:
            reasons = "; ".join(f"{n} x {reason}" for reason, n in m.failed_reasons.items())
            lines.append(f"{name}: {m.failed} of {m.tasks} tasks failed: {reasons}")
    return lines


def comparison_note(report: BenchReport) -> str:
    tasks = max((m.tasks for m in report.policies.values()), default=0)
    return (
        f"speedup = baseline `{report.baseline}` geometric-mean TCT / the policy's, on the "
        f"{report.compared_tasks} of {tasks} tasks every policy finished; bound = baseline geomean / "
        "isolated geomean (each task alone on an idle replica: no scheduler can beat it); KV bound = the "
        "same, with the cluster's KV capacity counted too (open-loop runs); headroom = "
        "log(speedup) / log(bound); service = TCT minus the task's own tool and think time"
    )


def results_table(report: BenchReport) -> Table:
    """Task completion: failures, TCT, its service part, the isolated limit, speedup and headroom."""
    m = report.meta
    table = Table(
        title=f"{m.title}: {m.workload}, {m.tasks} tasks, {m.replicas} replicas ({m.profile})",
        caption=comparison_note(report),
    )
    table.add_column("policy", no_wrap=True)
    table.add_column("tasks ok", justify="right")
    for header, _, _ in _columns(report, "completion"):
        table.add_column(header, justify="right")
    for row in _rows(report, "completion"):
        table.add_row(*row)
    return table


def calls_table(report: BenchReport) -> Table:
    """Per call and per engine: TTFT, turn latency, prefix cache, recomputation, preemptions, KV."""
    table = Table(title="Calls, cache and engines")
    table.add_column("policy", no_wrap=True)
    for header, _, _ in _columns(report, "calls"):
        table.add_column(header, justify="right")
    for row in _rows(report, "calls", with_ok=False):
        table.add_row(*row)
    return table


SPLIT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("first call's queue", "first_queue_s"),
    ("later calls' queue", "later_queue_s"),
    ("prefill", "prefill_s"),
    ("decode", "decode_s"),
    ("tool and think", "waits_s"),
)


def time_split_table(report: BenchReport) -> Table | None:
    """Where a finished task's time goes, mean seconds per task (None when no policy finished a task)."""
    if all(m.time_split is None for m in report.policies.values()):
        return None
    table = Table(
        title="Where a task's time goes (mean s per finished task)",
        caption="queue = sent to first scheduled by the engine (the proxy's queue and the engine's); "
        "prefill = scheduled to first token, re-prefill of evicted history included; decode = the rest",
    )
    table.add_column("policy", no_wrap=True)
    table.add_column("TCT mean", justify="right")
    for header, _ in SPLIT_COLUMNS:
        table.add_column(header, justify="right")
    rows = [(name, m.time_split, m.tct_mean_s) for name, m in report.policies.items()]
    alone = report.isolated_split
    if alone is not None:
        rows.insert(
            0,
            (
                "isolated (each task alone)",
                alone,
                (alone.prefill_s or 0.0) + (alone.decode_s or 0.0) + alone.waits_s,
            ),
        )
    for name, split, tct_mean in rows:
        cells = (
            ["n/a"] * len(SPLIT_COLUMNS)
            if split is None
            else [_fmt(getattr(split, field), "s") for _, field in SPLIT_COLUMNS]
        )
        table.add_row(name, _fmt(tct_mean, "s"), *cells)
    return table


def markdown_table(report: BenchReport) -> str:
    headers = ["policy", "tasks ok", *(h for h, _, _ in _columns(report))]
    lines = ["| " + " | ".join(headers) + " |", "| --- |" + " ---: |" * (len(headers) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    return "\n".join(lines)


def append_markdown(report: BenchReport, path: str | Path, plot: str | None = None) -> None:
    m = report.meta
    parts = [
        f"\n## {m.title} — {m.workload}, {m.replicas} replicas, {m.tasks} tasks\n",
        f"- Command: `{m.command}`",
        f"- Machine: {m.machine}",
        f"- Date: {m.date}",
        f"- Mode: {'discrete-event cluster (virtual time)' if m.mode == 'des' else 'over HTTP (loopback)'}, "
        f"profile `{m.profile}`, seed {m.seed}; {comparison_note(report)}",
    ]
    if m.notes:
        parts.append(f"- Notes: {m.notes}")
    if report.missing:
        parts.append("- Not run: " + "; ".join(f"`{k}`: {v}" for k, v in report.missing.items()))
    parts += [f"- Failed: {line}" for line in failure_lines(report)]
    parts += [f"- Warning: {w}" for w in report.warnings]
    parts += ["", markdown_table(report), ""]
    if plot:
        parts += [f"![Task completion time per policy]({plot})", ""]
    with open(path, "a") as f:
        f.write("\n".join(parts) + "\n")


def write_json(report: BenchReport, path: str | Path) -> None:
    Path(path).write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")


def save_plot(
    path: str | Path, title: str, xlabel: str, ylabel: str, draw: Callable[[Any], None], *, log: str = "x"
) -> None:
    """One PNG in the harness's style: `draw(ax)` adds the series, a log scale on axis `log`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    draw(ax)
    if log == "x":
        ax.set_xscale("log")
    else:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_completion_times(times: Mapping[str, Sequence[float]], path: str | Path, title: str) -> None:
    def draw(ax: Any) -> None:
        for name, values in times.items():
            ordered = sorted(v for v in values if v > 0)
            if ordered:
                ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
                ax.step(ordered, ys, where="post", label=name)

    save_plot(path, title, "task completion time (s)", "fraction of tasks", draw, log="x")
