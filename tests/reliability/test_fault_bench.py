"""`saga bench faults` on a short schedule: every call attempt is accounted for exactly once, every
scheduled fault is injected, and the proxy process is measured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtests.bench.faults import FaultBenchConfig, FaultEvent, _rss_mb, run_fault_bench, tally
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


@pytest.mark.parametrize("workers", [1, 2])
async def test_short_fault_run_accounts_for_every_call(workers: int) -> None:
    schedule = [
        FaultEvent(0.5, 0, Fault(kind="error", status=503, duration_s=1.0)),
        FaultEvent(1.5, 1, Fault(kind="die_mid_stream", after_chunks=1, duration_s=1.0)),
    ]
    config = FaultBenchConfig(
        replicas=2, tasks=8, concurrency=8, time_scale=100.0, schedule=schedule, workers=workers
    )
    tasks = generate("webarena", config.tasks, seed=3)
    report = await run_fault_bench(config, tasks)
    assert report.faults_injected == 2
    outcomes = report.completed + report.failed_clear + report.lost + report.hung + report.bad_answer
    assert report.calls_sent == outcomes
    assert report.tasks_ok + report.tasks_failed == len(tasks)
    assert report.proxy_peak_rss_mb >= report.proxy_rss_start_mb > 0


def test_memory_counts_every_process_under_the_proxy() -> None:
    """With workers the proxy is a supervisor and its children: the soak's RSS is the whole tree's."""
    child = "import time; b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(30)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"],
        start_new_session=True,
    )
    try:
        children = 0.0
        for _ in range(100):
            children = _rss_mb(parent.pid) - _own_rss_mb(parent.pid)
            if children > 60:
                break
            time.sleep(0.1)
        assert children > 60  # the child's 64 MiB counts with its parent's
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def _own_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_the_soak_names_each_call_that_got_no_answer() -> None:
    from loadtests.soak import unanswered

    record = TaskRecord("sess-7", "t", "a", started_s=0.0)
    record.calls = [
        CallRecord(step=0, started_s=time.monotonic() * 50, latency_s=50.0),
        CallRecord(step=1, started_s=time.monotonic() * 50, latency_s=850.0, error="t", error_kind="timeout"),
        CallRecord(step=2, started_s=0, latency_s=1, error="HTTP 503", error_kind="http", status=503),
        CallRecord(step=2, started_s=0, latency_s=1, error="gone", error_kind="disconnected", replica="r1"),
    ]
    lines = unanswered([record], time_scale=50.0)
    assert len(lines) == 2  # the answered call and the clear error are not listed
    assert lines[0].startswith("timeout: session sess-7 step 1 at ") and "after 17.0 s" in lines[0]
    assert lines[1].startswith("disconnected: session sess-7 step 2") and "replica r1: gone" in lines[1]
