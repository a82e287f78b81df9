"""`saga demo` (the README's first command) end to end on a tiny fleet, and its busy-host warning."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from loadtests.busy_host import LAG_WARNING_SHARE, busy_host_warning
from loadtests.demo import DemoConfig, results_table, run_demo
from loadtests.summary import Summary

ROOT = Path(__file__).resolve().parents[2]


async def test_a_small_demo_runs_every_policy_on_the_same_tasks_and_prints_the_table() -> None:
    config = DemoConfig(
        replicas=2, sessions=4, steps=3, time_scale=20.0, policies=["round-robin", "saga"], kv_blocks=None
    )
    out = io.StringIO()
    results = await run_demo(config, Console(file=out, width=160))
    assert list(results) == ["round-robin", "saga"]
    for run in results.values():
        assert run.summary.tasks == 4 and run.summary.failed == 0
        assert run.summary.tct_mean_s > 0 and run.wall_s > 0 and run.lag_s >= 0
    printed = out.getvalue()
    assert "Task completion time" in printed and "round-robin" in printed and "saga" in printed
    assert "speedup vs round-robin" in printed


def test_the_busy_host_warning_names_only_the_runs_whose_replicas_fell_behind() -> None:
    quiet = (100.0, 100.0 * LAG_WARNING_SHARE / 2)
    late = (100.0, 12.0)
    assert busy_host_warning({"round-robin": quiet, "saga": quiet}) == ""
    warning = busy_host_warning({"round-robin": quiet, "saga": late})
    assert "saga 12% of 100 s" in warning and "round-robin" not in warning
    assert "too busy" in warning
    assert busy_host_warning({"never ran": (0.0, 0.0)}) == ""


def test_the_demo_piped_to_a_file_prints_the_table_as_the_readme_shows_it() -> None:
    """Out of a terminal (a log, `| tee`) rich would fit the table into 80 columns and cut its headers."""
    command = "demo --replicas 1 --sessions 2 --steps 2 --time-scale 20"
    command += " --policies round-robin,session-affinity,saga"
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", *command.split()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": ""},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("SAGA demo: 2 agent tasks") and lines[0].endswith("simulated time x20")
    assert "speedup vs round-robin" in result.stdout and "…" not in result.stdout


def test_the_demo_speedup_compares_the_tasks_every_policy_finished() -> None:
    """The speedup column divided each policy's mean over its own finished tasks: a policy 10% slower on
    every task, which failed the two longest, showed as faster than the baseline."""
    base = {f"t{i}": float(10 * (i + 1)) for i in range(6)}  # 10 .. 60 s
    slower = {t: 1.1 * s for t, s in base.items() if t not in ("t4", "t5")}
    summaries = {
        "round-robin": Summary(6, 0, 35.0, 30.0, 35.0, 55.0, 59.0, 0.0, 12),
        "worse": Summary(6, 2, sum(slower.values()) / 4, 25.0, 27.5, 40.0, 43.0, 0.0, 12),
    }
    out = io.StringIO()
    Console(file=out, width=160).print(
        results_table(summaries, "round-robin", {"round-robin": base, "worse": slower})
    )
    row = next(line for line in out.getvalue().splitlines() if " worse " in line)
    assert row.rstrip(" │").endswith("0.91x"), row  # 25 s against 27.5 s over the four both finished
