"""`saga bench core` runs on a small configuration and reports its numbers (no assertion on their values:
they are this machine's times)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from loadtests.bench.cli import add_bench_parser, run_bench
from loadtests.bench.core import bench_core


@pytest.mark.parametrize("queue", [False, True])
def test_every_timed_call_is_measured_over_sessions_that_stay_live(queue: bool) -> None:
    row = bench_core(
        "session-affinity", queue=queue, replicas=4, sessions=50, calls=300, warmup=100, in_flight=8
    )
    assert row.sessions_live == 50  # every session is in the core's table between its calls
    assert row.calls == 300 and row.held_at_end == 0
    for cost in (row.per_call, row.request_arrived, row.first_token, row.request_finished):
        assert 0 <= cost.p50_us <= cost.p99_us <= cost.max_us
        assert 0 <= cost.wall_p50_us <= cost.wall_p99_us <= cost.wall_max_us
    assert row.calls_per_s > 0


def test_new_workflows_replace_ended_ones_and_ticks_are_timed_apart() -> None:
    row = bench_core(
        "saga", queue=False, replicas=4, sessions=60, calls=300, warmup=100, in_flight=8, new_workflows=0.3
    )
    assert 40 <= row.workflows_begun <= 150  # ~90 of 300 calls began a workflow
    assert row.sessions_live == 60  # each ended workflow's session was forgotten: the table does not grow
    assert row.calls == 300  # every new workflow's first call was admitted and dispatched
    assert row.tick is not None and 0 <= row.tick.p50_us <= row.tick.p99_us <= row.tick.max_us
    plain = bench_core("saga", queue=False, replicas=4, sessions=60, calls=300, warmup=100, in_flight=8)
    assert plain.workflows_begun == 0 and plain.new_workflows == 0.0


def test_the_cli_prints_a_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="cmd"))
    out = tmp_path / "core.json"
    argv = "bench core --policies round-robin,prefix-load --queue both --replicas 4 --sessions 40"
    argv += f" --calls 100 --warmup 20 --in-flight 4 --json {out}"
    assert run_bench(parser.parse_args(argv.split())) == 0
    report = json.loads(out.read_text())
    rows = [(r["policy"], r["queue"]) for r in report["rows"]]
    assert rows == [(p, q) for p in ("round-robin", "prefix-load") for q in (False, True)]
    assert report["sessions"] == 40 and report["machine"] and report["date"]
    assert report["timer_overhead_us"] >= 0
    assert "prefix-load" in capsys.readouterr().out
    bad = parser.parse_args(["bench", "core", "--policies", "nope", "--sessions", "4"])
    assert run_bench(bad) == 2


def test_repeats_give_each_calls_least_time_over_identical_runs(tmp_path: Path) -> None:
    from loadtests.bench.core import _Samples, least_per_call

    a, b = _Samples(), _Samples()
    for cpu_a, cpu_b in ((5, 7), (9, 2), (4, 4)):
        a.add(cpu_a, cpu_a * 2)
        b.add(cpu_b, cpu_b * 3)
    least = least_per_call([a, b])
    assert list(least.cpu) == [5, 2, 4] and list(least.wall) == [10, 6, 8]
    with pytest.raises(RuntimeError):
        least_per_call([a, _Samples()])
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="cmd"))
    out = tmp_path / "core.json"
    argv = "bench core --policies saga --queue off --replicas 4 --sessions 40 --calls 200 --warmup 20"
    argv += f" --in-flight 4 --repeats 2 --json {out}"
    assert run_bench(parser.parse_args(argv.split())) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["repeats"] == 2 and len(row["per_call_p99_runs"]) == 2
    least_p99 = row["per_call_least"]["p99_us"]
    assert 0 < least_p99 <= max(row["per_call_p99_runs"]) + 1e-9  # a call's least is at most either run's
