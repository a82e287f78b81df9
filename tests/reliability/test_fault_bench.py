"""`saga bench faults` on a short schedule: every call attempt is accounted for exactly once, every
scheduled fault is injected, and the proxy process is measured."""

from __future__ import annotations

from loadtests.bench.faults import FaultBenchConfig, FaultEvent, run_fault_bench, tally
from loadtests.tasks import CallRecord, TaskRecord
from loadtests.workloads.catalog import generate
from simulator.faults import Fault


def test_tally_counts_each_attempt_once() -> None:
    record = TaskRecord("s", "t", "a", started_s=0.0)
    record.calls = [
        CallRecord(step=0, started_s=0, latency_s=1),
        CallRecord(step=1, started_s=1, latency_s=1, error="HTTP 503", error_kind="http", status=503),
        CallRecord(step=1, started_s=2, latency_s=1, error="gone", error_kind="disconnected"),
        CallRecord(step=1, started_s=3, latency_s=1),
        CallRecord(step=2, started_s=4, latency_s=9, error="t", error_kind="timeout"),
    ]
    counts = tally([record])
    assert counts == {
        "calls_sent": 5,
        "completed": 2,
        "failed_clear": 1,
        "lost": 1,
        "hung": 1,
        "bad_answer": 0,
        "retried_by_client": 2,
    }


async def test_short_fault_run_accounts_for_every_call() -> None:
    schedule = [
        FaultEvent(0.5, 0, Fault(kind="error", status=503, duration_s=1.0)),
        FaultEvent(1.5, 1, Fault(kind="die_mid_stream", after_chunks=1, duration_s=1.0)),
    ]
    config = FaultBenchConfig(replicas=2, tasks=8, concurrency=8, time_scale=100.0, schedule=schedule)
    tasks = generate("webarena", config.tasks, seed=3)
    report = await run_fault_bench(config, tasks)
    assert report.faults_injected == 2
    outcomes = report.completed + report.failed_clear + report.lost + report.hung + report.bad_answer
    assert report.calls_sent == outcomes
    assert report.tasks_ok + report.tasks_failed == len(tasks)
    assert report.proxy_peak_rss_mb >= report.proxy_rss_start_mb > 0
