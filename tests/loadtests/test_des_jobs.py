"""`saga bench des --jobs N`: policies and sweep cells in worker processes give the serial run's results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = [sys.executable, "-m", "proxy.cli", "bench", "des", "--workload", "webarena", "--tasks", "6"]
BENCH += ["--replicas", "2", "--policies", "session-affinity,round-robin,least-request", "--markdown", ""]


def without_wall_times(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: without_wall_times(v) for k, v in data.items() if k != "wall_s"}
    if isinstance(data, list):
        return [without_wall_times(v) for v in data]
    return data


def bench_json(tmp_path: Path, name: str, *extra: str) -> Any:
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    # a trace gives the tasks: `--workload` beside it is refused (it was ignored)
    bench = [a for a in BENCH if a not in ("--workload", "webarena")] if "--trace" in extra else BENCH
    done = subprocess.run(
        [*bench, "--json", str(out), *extra], capture_output=True, text=True, timeout=240, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


def test_policies_in_two_processes_give_the_serial_results(tmp_path: Path) -> None:
    serial = bench_json(tmp_path, "serial", "--concurrency", "4")
    parallel = bench_json(tmp_path, "parallel", "--concurrency", "4", "--jobs", "2")
    assert list(parallel["policies"]) == ["session-affinity", "round-robin", "least-request"]
    assert without_wall_times(parallel["policies"]) == without_wall_times(serial["policies"])
    assert all(m["wall_s"] > 0 for m in parallel["policies"].values())
    assert parallel["baseline"] == serial["baseline"]


def test_sweep_cells_in_two_processes_give_the_serial_results(tmp_path: Path) -> None:
    serial = bench_json(tmp_path, "serial", "--sweep-load", "0.2,1")
    parallel = bench_json(tmp_path, "parallel", "--sweep-load", "0.2,1", "--jobs", "2")
    stamp = ("command", "machine", "date")
    assert all(parallel[k] and serial[k] for k in stamp)  # each result says how to reproduce it
    assert without_wall_times({k: v for k, v in parallel.items() if k not in stamp}) == without_wall_times(
        {k: v for k, v in serial.items() if k not in stamp}
    )
    assert [p["rate_per_s"] for p in parallel["points"]["round-robin"]] == [0.2, 1.0]


def test_jobs_below_one_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([*BENCH, "--jobs", "0"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert "argument --jobs: needs a whole number >= 1" in done.stdout + done.stderr


pytestmark = pytest.mark.timeout(290)


def test_a_sweep_replays_the_trace_it_names(tmp_path: Path) -> None:
    """`--trace F --sweep-load` ran generated tasks of `--workload` under the trace's name."""
    trace = tmp_path / "tiny.csv"
    head = "session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms"
    rows = [f"t{s},0,{r},{'' if r else 100},50,20,{100 if r == 0 else 0}" for s in range(3) for r in range(2)]
    trace.write_text("\n".join([head, *rows]) + "\n")
    swept = bench_json(tmp_path, "trace", "--trace", str(trace), "--sweep-load", "0.05")
    (point,) = swept["points"]["round-robin"]
    assert point["metrics"]["calls"] == 6  # 3 sessions of 2 calls (the generated webarena tasks make more)
