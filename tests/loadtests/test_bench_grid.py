"""`saga bench grid` on a tiny grid: every cell run or explained, speedups against session-affinity and the
best baseline, the KV calibration, and the JSON, markdown and heat-map outputs."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from loadtests.bench.cli import add_bench_parser, run_bench
from loadtests.bench.grid import best_baseline
from loadtests.bench.grid_runs import CalibrationPoint, GridCell, kv_for_target, peak_context_tokens, refine
from loadtests.tasks import AgentTask, Step
from simulator.cost_model import get_profile


def test_peak_context_follows_history_compaction_and_replacement() -> None:
    steps = [Step(10, "t", 0.0, 100), Step(20, "t", 0.0, 50, compact_to_tokens=300), Step(5, "t", 0.0, 0)]
    task = AgentTask("s", system_tokens=200, task_tokens=100, steps=steps)
    # calls: 300 + 10; 410 + 20 (compacted to 300, then + 50); 350 + 5
    assert peak_context_tokens(task) == 430
    replaced = AgentTask("r", system_tokens=200, task_tokens=100, steps=steps, replace_history=True)
    assert peak_context_tokens(replaced) == 320  # 300 + 10; then 200 + 100 + 20; then 200 + 50 + 5


def test_kv_for_target_scales_capacity_and_never_below_the_longest_context() -> None:
    profile = get_profile("llama3-8b-h100")
    cell = kv_for_target(0.5, 2.0, at_full_kv=0.4, longest=1000, profile=profile)
    assert cell.kv_scale == pytest.approx(0.2) and cell.note is None
    tight = kv_for_target(0.5, 2.0, at_full_kv=0.4, longest=profile.kv_capacity_tokens // 2, profile=profile)
    assert tight.kv_scale * profile.kv_capacity_tokens >= profile.kv_capacity_tokens // 2
    assert tight.note is not None and "longest task context" in tight.note
    assert kv_for_target(0.5, 2.0, at_full_kv=0.0, longest=10, profile=profile).unreachable


def test_a_calibration_step_moves_kv_scale_along_the_measured_slope() -> None:
    cell = GridCell(load=0.85, oversub_target=2.0, oversub_at_full_kv=0.2, kv_scale=0.1)
    refine(cell, CalibrationPoint(kv_scale=0.1, saturation_tasks_per_s=1.0, oversub=1.0), floor=0.01)
    k = math.log(0.2 / 1.0) / math.log(0.1 / 1.0)  # oversubscription ~ kv_scale^-k through both points
    assert cell.kv_scale == pytest.approx(0.1 * (1.0 / 2.0) ** (1 / k)) and not cell.calibrated
    refine(
        cell, CalibrationPoint(kv_scale=cell.kv_scale, saturation_tasks_per_s=1.0, oversub=1.9), floor=0.01
    )
    assert cell.calibrated and len(cell.calibration) == 2  # within 10%: stays
    low = GridCell(load=0.85, oversub_target=3.0, oversub_at_full_kv=0.2, kv_scale=0.1)
    refine(low, CalibrationPoint(kv_scale=0.1, saturation_tasks_per_s=1.0, oversub=0.5), floor=0.05)
    assert low.kv_scale == 0.05 and low.note is not None  # held at the smallest KV, and said so


def test_one_calibration_step_runs_and_moves_toward_the_target(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="cmd"))
    out = tmp_path / "grid.json"
    argv = [
        *("bench", "grid", "--workloads", "webarena", "--loads", "0.85", "--oversub", "0.1"),
        *("--policies", "session-affinity", "--tasks", "8", "--replicas", "2", "--saturation-max-tasks", "8"),
        *("--json", str(out)),
    ]
    assert run_bench(parser.parse_args(argv)) == 0
    (cell,) = json.loads(out.read_text())["workloads"][0]["cells"]
    (point,) = cell["calibration"]
    assert point["kv_scale"] == pytest.approx(cell["oversub_at_full_kv"] / 0.1)
    if cell["calibrated"]:
        assert cell["kv_scale"] == point["kv_scale"]
    elif cell["note"] is None:  # moved the way the measurement said
        assert (cell["kv_scale"] < point["kv_scale"]) == (point["oversub"] < 0.1)
    assert cell["rate_per_s"] == pytest.approx(0.85 * cell["saturation_tasks_per_s"])


def test_the_best_baseline_is_the_fastest_policy_not_named_saga() -> None:
    assert best_baseline({"saga": 10.0, "round-robin": 30.0, "session-affinity": 20.0}) == "session-affinity"
    assert best_baseline({"saga": 10.0}) is None
    assert best_baseline({"a": 0.0, "b": 5.0}) == "b"  # no finished task: no geomean


def test_a_tiny_grid_runs_every_cell_and_writes_json_markdown_and_heat_maps(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="cmd"))
    out = tmp_path / "grid.json"
    argv = [
        *("bench", "grid", "--workloads", "webarena", "--loads", "0.5,1.1", "--oversub", "1,3"),
        *("--policies", "round-robin,session-affinity", "--tasks", "8", "--replicas", "2"),
        *("--saturation-max-tasks", "16", "--calibration-steps", "0"),
        *("--json", str(out), "--markdown", str(tmp_path / "grid.md"), "--plot-dir", str(tmp_path / "plots")),
    ]
    assert run_bench(parser.parse_args(argv)) == 0
    report = json.loads(out.read_text())
    assert report["command"] and report["machine"] and report["date"]
    assert report["focus"] == "session-affinity"  # no `saga`: the last policy
    (w,) = report["workloads"]
    search = {int(n): v for n, v in w["saturation_search"].items()}
    assert set(search) <= {8, 16} and 8 in search  # doubling from --tasks, up to the cap
    assert w["saturation_population"] in search
    assert w["saturation_full_kv_tasks_per_s"] == max(search.values()) == search[w["saturation_population"]]
    cells = {(c["load"], c["oversub_target"]): c for c in w["cells"]}
    assert set(cells) == {(0.5, 1.0), (0.5, 3.0), (1.1, 1.0), (1.1, 3.0)}
    for (load, _), c in cells.items():
        assert c["unreachable"] is None
        assert c["rate_per_s"] == pytest.approx(load * c["saturation_tasks_per_s"])
        assert c["oversub_measured"] > 0
        sa, rr = c["policies"]["session-affinity"], c["policies"]["round-robin"]
        assert sa["metrics"]["speedup_vs_baseline"] == pytest.approx(1.0)
        assert c["best_baseline"] in ("session-affinity", "round-robin")
        best = c["policies"][c["best_baseline"]]
        assert best["speedup_vs_best"] == pytest.approx(1.0)
        for p in (sa, rr):
            assert p["speedup_vs_best"] <= 1.0 + 1e-9
            assert p["metrics"]["tct_p50_s"] <= p["tct_p90_s"] <= p["metrics"]["tct_p99_s"] + 1e-9
            assert p["metrics"]["failed"] == 0 and p["metrics"]["bound_speedup"] > 0
        assert rr["metrics"]["speedup_vs_baseline"] == pytest.approx(
            sa["metrics"]["tct_geomean_s"] / rr["metrics"]["tct_geomean_s"]
        )
    for load in (0.5, 1.1):  # three times the oversubscription: a third of the KV, unless held at the floor
        one, three = cells[(load, 1.0)], cells[(load, 3.0)]
        if three["note"] is None:
            assert three["kv_scale"] == pytest.approx(one["kv_scale"] / 3)
        else:
            assert three["kv_scale"] <= one["kv_scale"]
        assert one["oversub_at_full_kv"] == three["oversub_at_full_kv"] > 0
    assert cells[(1.1, 1.0)]["oversub_at_full_kv"] > cells[(0.5, 1.0)]["oversub_at_full_kv"]
    markdown = (tmp_path / "grid.md").read_text()
    assert "| load | oversub |" in markdown and "plots/grid-webarena.png" in markdown
    assert (tmp_path / "plots" / "grid-webarena.png").read_bytes()[:4] == b"\x89PNG"
    assert not math.isnan(cells[(0.5, 1.0)]["policies"]["round-robin"]["speedup_vs_best"])
    # --render: the same tables and heat maps from the JSON alone, nothing run
    again = ["bench", "grid", "--render", str(out), "--markdown", str(tmp_path / "again.md")]
    assert run_bench(parser.parse_args([*again, "--plot-dir", str(tmp_path / "plots")])) == 0
    assert (tmp_path / "again.md").read_text() == markdown


def test_bad_options_fail_naming_them(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="cmd"))
    for bad, words in (
        (["--workloads", "nope"], "--workloads"),
        (["--policies", "nope"], "--policies"),
        (["--focus", "prefix-load", "--policies", "round-robin"], "--focus"),
    ):
        assert run_bench(parser.parse_args(["bench", "grid", *bad])) == 2
        assert words in capsys.readouterr().out
    # numbers are checked as the command line is read, before any run (NaN passed `min(...) <= 0` and failed
    # only after the saturation search; a missing output folder failed after the whole grid)
    for bad, words in (
        (["--loads", "0,1"], "--loads"),
        (["--loads", "nan"], "--loads"),
        (["--oversub", "1,inf"], "--oversub"),
        (["--jobs", "-2"], "--jobs"),
        (["--calibration-steps", "-1"], "--calibration-steps"),
        (["--json", "/nonexistent/x.json"], "--json"),
        (["--plot-dir", "/nonexistent/plots"], "--plot-dir"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["bench", "grid", *bad])
        assert exit_info.value.code == 2 and words in capsys.readouterr().err


def test_load_against_the_full_kv_keeps_each_load_columns_rate(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="cmd"))
    out = tmp_path / "grid.json"
    argv = [
        *("bench", "grid", "--workloads", "webarena", "--loads", "0.85", "--oversub", "0.1,50"),
        *("--policies", "session-affinity", "--tasks", "8", "--replicas", "2", "--saturation-max-tasks", "8"),
        *("--load-basis", "full-kv", "--json", str(out)),
    ]
    assert run_bench(parser.parse_args(argv)) == 0
    report = json.loads(out.read_text())
    assert report["load_basis"] == "full-kv"
    (w,) = report["workloads"]
    assert w["cells"][1]["note"] is not None  # 50x is past the smallest KV: held there, and run
    for c in w["cells"]:
        assert c["saturation_tasks_per_s"] == w["saturation_full_kv_tasks_per_s"]
        assert c["rate_per_s"] == pytest.approx(0.85 * w["saturation_full_kv_tasks_per_s"])
        for point in c["calibration"]:
            assert point["saturation_tasks_per_s"] == w["saturation_full_kv_tasks_per_s"]
