"""Honest reporting: failed tasks counted with reasons, survivor sets compared fairly, service time and turn
latency beside TCT, the isolated bound and the headroom captured; and the CLI's exit status and files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loadtests.bench.metrics import PolicyMetrics, policy_metrics, with_speedups
from loadtests.bench.report import (
    RunMeta,
    append_markdown,
    calls_table,
    failure_lines,
    results_table,
    write_json,
)
from loadtests.bench.runner import ContenderRun, compare
from loadtests.summary import failed_reasons, summarize
from loadtests.tasks import AgentTask, CallRecord, Step, TaskRecord
from proxy.cli import main

TOO_LONG = (
    "invalid request: This model's maximum context length is 131072 tokens. However, your request has "
    "{} input tokens. Please reduce the length of the input messages."
)


def ok(step: int, started: float = 0.0, latency: float = 1.0) -> CallRecord:
    return CallRecord(step, started, latency, 0.1, 100, 50, 10)


def failed(step: int, error: str) -> CallRecord:
    return CallRecord(step, 0.0, 0.0, None, 0, 0, 0, error=error)


def task(
    sid: str, waits: tuple[float, ...] = (1.0, 2.0, 0.5), turns: tuple[int, ...] | None = None
) -> AgentTask:
    steps = [Step(10, "t", w, 40, None, turns[k] if turns else None) for k, w in enumerate(waits)]
    return AgentTask(sid, 100, 50, steps)


def test_failed_tasks_are_counted_by_reason_with_numbers_folded() -> None:
    records = [
        TaskRecord("a", "t", "x", 0.0, 1.0, [failed(0, TOO_LONG.format(140000))]),
        TaskRecord("b", "t", "x", 0.0, 1.0, [ok(0), failed(1, TOO_LONG.format(150123))]),
        TaskRecord("c", "t", "x", 0.0, 1.0, [failed(0, "rejected (429): queue full")]),
        TaskRecord("d", "t", "x", 0.0, 9.0, [ok(0)]),
    ]
    reasons = failed_reasons(records)
    assert list(reasons.values()) == [2, 1]
    assert next(iter(reasons)).startswith("invalid request: This model's maximum context length is N tokens")
    assert "rejected (N): queue full" in reasons
    m = policy_metrics(records, [task(s) for s in "abcd"], dict.fromkeys("abcd", 1.0))
    assert (m.tasks, m.failed, m.failed_reasons) == (4, 3, reasons)
    summary = summarize(records)
    assert (summary.failed, summary.failed_reasons, summary.tct_mean_s) == (3, reasons, 9.0)


def test_service_time_is_completion_time_less_the_tasks_own_waits() -> None:
    tasks = [task("a"), task("b", waits=(10.0, 0.0, 0.0))]
    records = [
        TaskRecord("a", "t", "x", 0.0, 10.0, [ok(0), ok(1), ok(2)]),  # waits 3.5 s: service 6.5 s
        TaskRecord("b", "t", "x", 5.0, 25.0, [ok(0), ok(1), ok(2)]),  # waits 10 s: service 10 s
    ]
    m = policy_metrics(records, tasks, {"a": 1.0, "b": 1.0})
    assert m.tct_mean_s == 15.0
    assert m.service_mean_s == pytest.approx(8.25)
    assert m.service_geomean_s == pytest.approx(math.sqrt(65.0))
    assert m.service_p50_s == pytest.approx(8.25)
    assert m.turns is None and m.turn_latency_p50_s is None  # no turns marked


def test_turn_latency_spans_a_turns_calls_and_skips_unfinished_turns() -> None:
    marked = task("a", turns=(0, 0, 1))
    # Turn 0: calls at 0-1 and 2-3 (a 1 s tool between) -> 3 s; the person thinks; turn 1: 10-12 -> 2 s.
    record = TaskRecord("a", "t", "x", 0.0, 12.5, [ok(0, 0.0), ok(1, 2.0), ok(2, 10.0, 2.0)])
    m = policy_metrics([record], [marked], {"a": 1.0})
    assert m.turns == 2 and m.turn_latency_p50_s == pytest.approx(2.5)
    broken = TaskRecord("a", "t", "x", 0.0, 10.0, [ok(0, 0.0), ok(1, 2.0), failed(2, "HTTP 500")])
    m = policy_metrics([broken], [marked], {"a": 1.0})
    assert m.turns == 1 and m.turn_latency_p99_s == pytest.approx(3.0)


def metrics_with(
    times: dict[str, float], isolated: dict[str, float], fail: tuple[str, ...] = ()
) -> PolicyMetrics:
    records = [TaskRecord(s, "t", "x", 0.0, t, [ok(0)]) for s, t in times.items()]
    records += [TaskRecord(s, "t", "x", 0.0, 1.0, [failed(0, "HTTP 400")]) for s in fail]
    return policy_metrics(records, [task(s) for s in [*times, *fail]], isolated)


def test_bound_and_headroom_on_hand_made_numbers() -> None:
    isolated = {"a": 5.0, "b": 5.0}
    base = metrics_with({"a": 20.0, "b": 20.0}, isolated)
    fast = metrics_with({"a": 10.0, "b": 10.0}, isolated)
    slow = metrics_with({"a": 40.0, "b": 40.0}, isolated)
    assert base.tct_isolated_geomean_s == pytest.approx(5.0)
    out = with_speedups({"base": base, "fast": fast, "slow": slow}, "base")
    assert out["fast"].bound_speedup == pytest.approx(4.0)  # 20 / 5: no scheduler beats it
    assert out["fast"].headroom_captured == pytest.approx(0.5)  # log 2 / log 4
    assert out["base"].headroom_captured == pytest.approx(0.0)
    assert out["slow"].headroom_captured == pytest.approx(-0.5)
    # A baseline at (or within 1% of) the isolated time leaves no headroom: None, not a blown-up ratio.
    for base_s in (5.0, 5.02):
        at_limit = metrics_with({"a": base_s, "b": base_s}, isolated)
        out = with_speedups({"base": at_limit, "fast": fast}, "base")
        assert out["base"].bound_speedup == pytest.approx(base_s / 5.0)
        assert out["fast"].headroom_captured is None and out["base"].headroom_captured is None


def test_speedups_are_on_the_common_survivors_when_survivor_sets_differ() -> None:
    isolated = {"a": 5.0, "b": 50.0}
    base = metrics_with({"a": 20.0, "b": 100.0}, isolated)
    lossy = metrics_with({"a": 10.0}, isolated, fail=("b",))  # "b", the slow task, failed
    # Over its own survivors "lossy" looks 4.5x faster (geomean 10 vs 44.7); on the common task "a": 2x.
    finished = {"base": {"a": 20.0, "b": 100.0}, "lossy": {"a": 10.0}}
    out = with_speedups({"base": base, "lossy": lossy}, "base", finished, isolated)
    assert out["lossy"].speedup_vs_baseline == pytest.approx(2.0)
    assert out["lossy"].bound_speedup == pytest.approx(4.0)  # 20 / 5, on "a" alone
    assert out["lossy"].tct_geomean_s == pytest.approx(10.0)  # its own figures stay its own


def meta(tasks: int) -> RunMeta:
    return RunMeta(
        title="t", command="saga bench", date="2026-11-30", machine="m", mode="des", workload="trace x",
        replicas=1, profile="llama3-8b-h100", tasks=tasks, seed=0,
    )  # fmt: skip


async def test_reports_name_failures_and_warn_on_different_survivor_sets(tmp_path: Path) -> None:
    tasks = [task("a"), task("b")]

    async def run_one(name: str) -> ContenderRun:
        b_call = ok(0) if name == "base" else failed(0, TOO_LONG.format(140000))
        return ContenderRun(
            [
                TaskRecord("a", "t", "x", 0.0, 20.0 if name == "base" else 10.0, [ok(0)]),
                TaskRecord("b", "t", "x", 0.0, 100.0, [b_call]),
            ]
        )

    report, _ = await compare(["base", "lossy"], run_one, tasks, baseline="base", meta=meta(2))
    assert report.compared_tasks == 1
    assert any("different sets of tasks" in w and "on the 1 tasks" in w for w in report.warnings)
    assert report.policies["lossy"].speedup_vs_baseline == pytest.approx(2.0)
    (line,) = failure_lines(report)
    assert line.startswith("lossy: 1 of 2 tasks failed: 1 x invalid request: This model's maximum")
    write_json(report, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    lossy = data["policies"]["lossy"]
    assert lossy["failed"] == 1 and sum(lossy["failed_reasons"].values()) == 1
    assert {"tct_isolated_geomean_s", "bound_speedup", "headroom_captured", "service_geomean_s"} <= set(lossy)
    assert data["compared_tasks"] == 1
    md = tmp_path / "b.md"
    append_markdown(report, md)
    text = md.read_text()
    assert "- Failed: lossy: 1 of 2 tasks failed" in text and "- Warning: policies finished different" in text
    assert "| lossy | 1/2 | 1 |" in text and "on the 1 of 2 tasks every policy finished" in text
    headers = [c.header for c in results_table(report).columns]
    assert {"tasks ok", "failed", "service geomean", "isolated geomean", "bound", "headroom"} <= set(headers)
    assert {"TTFT mean", "TTFT p50", "prefix hit"} <= {c.header for c in calls_table(report).columns}


HEADER = "session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms"


def bench(tmp_path: Path, trace: str, *extra: str) -> int:
    path = tmp_path / "trace.csv"
    path.write_text(trace)
    args = [
        "bench",
        "des",
        "--trace",
        str(path),
        "--replicas",
        "1",
        "--policies",
        "session-affinity,round-robin",
    ]
    return main([*args, *extra])


def test_cli_exits_non_zero_when_every_task_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    too_long = f"{HEADER}\ns,0,0,140000,10,5,0\nt,1,0,140000,10,5,0\n"
    assert bench(tmp_path, too_long, "--json", "r.json") == 1
    out = capsys.readouterr().out
    assert "every task failed under session-affinity, round-robin" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["policies"]["round-robin"]["failed"] == 2
    assert not (tmp_path / "docs").exists()  # no markdown unless asked


def test_cli_refuses_bad_traces_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench(tmp_path, HEADER + "\n") == 2
    assert "no rows" in capsys.readouterr().out
    assert bench(tmp_path, f"{HEADER}\ns,0,0,100,10,5,0\ns,nan,1,,10,5,0\n") == 2
    assert "trace line 3: arrival_time must be finite" in capsys.readouterr().out


def test_cli_writes_markdown_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    trace = f"{HEADER}\ns,0,0,100,10,5,500\ns,0,1,,10,5,0\nt,0.5,0,100,20,5,0\n"
    assert bench(tmp_path, trace) == 0
    assert list(tmp_path.iterdir()) == [tmp_path / "trace.csv"]
    assert bench(tmp_path, trace, "--markdown", "out.md") == 0
    text = (tmp_path / "out.md").read_text()
    assert "| session-affinity (baseline) | 2/2 |" in text and "bound" in text
