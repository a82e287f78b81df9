"""`saga bench` stopped by SIGTERM (what `timeout`, CI runners and `kill` send) stops what it started, as
Ctrl-C does: the forty-fourth session's review found `saga bench live`'s vllm-router left running, holding
its ports, after the bench was killed this way."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("vllm_router") is None, reason="vllm-router is not installed")
def test_sigterm_stops_the_peer_router_a_live_bench_started() -> None:
    cmd = [sys.executable, "-m", "proxy.cli", "bench", "live", "--routers", "vllm-router:round_robin"]
    cmd += ["--workload", "webarena", "--tasks", "40", "--replicas", "2", "--time-scale", "2"]
    bench = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        me = psutil.Process(bench.pid)
        deadline = time.monotonic() + 90
        routers: list[psutil.Process] = []
        while not routers:
            assert bench.poll() is None and time.monotonic() < deadline, "the router did not start"
            time.sleep(0.5)
            routers = [p for p in me.children(recursive=True) if p.pid != bench.pid]
        time.sleep(2)  # serving: the tasks run
        bench.send_signal(signal.SIGTERM)
        _, err = bench.communicate(timeout=60)
        _, alive = psutil.wait_procs(routers, timeout=15)
        assert not alive, [p.cmdline() for p in alive]
        assert bench.returncode == 130 and "stopped (SIGTERM)" in err and "Traceback" not in err, err[-2000:]
    finally:
        if bench.poll() is None:
            bench.kill()
        for child in psutil.Process(os.getpid()).children(recursive=True):
            if "vllm" in " ".join(child.cmdline()):
                child.kill()


@pytest.mark.parametrize(
    ("sig", "jobs", "group"),
    [
        (signal.SIGINT, 1, False),
        (signal.SIGINT, 2, False),
        (signal.SIGTERM, 2, False),
        (signal.SIGINT, 2, True),
    ],
)
def test_a_signal_stops_a_des_bench_and_its_worker_processes_at_once(
    sig: signal.Signals, jobs: int, group: bool
) -> None:
    """Ctrl-C during `saga bench des` was heard only when a policy's run ended (the compiled event loop ran
    no interpreted code, where Python runs signal handlers) or, with workers, once every queued run had
    ended (~20 s), and then it exited 0, as if it had succeeded (the forty-fourth session's review): now it
    stops at once, its workers with it, status 130. `group`: sent to the whole process group, as a
    terminal's Ctrl-C is, which workers starting up printed tracebacks for (the nineteenth review)."""
    cmd = [sys.executable, "-m", "proxy.cli", "bench", "des", "--workload", "swe", "--tasks", "300"]
    cmd += ["--policies", "saga,session-affinity,round-robin,least-request", "--jobs", str(jobs)]
    bench = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=group
    )
    try:
        me = psutil.Process(bench.pid)
        deadline = time.monotonic() + 60
        workers: list[psutil.Process] = []
        while jobs > 1 and len(workers) < jobs:  # its DES workers run
            assert bench.poll() is None and time.monotonic() < deadline, bench.communicate()
            time.sleep(0.3)
            workers = me.children(recursive=True)
        time.sleep(1.0 if jobs > 1 else 4.0)  # (one process: its first run is under way)
        sent = time.monotonic()
        if group:
            os.killpg(bench.pid, sig)
        else:
            bench.send_signal(sig)
        out, err = bench.communicate(timeout=60)
        took = time.monotonic() - sent
        _, alive = psutil.wait_procs(workers, timeout=10)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert not alive, [p.cmdline() for p in alive]
    assert bench.returncode == 130 and "Traceback" not in err, (bench.returncode, err[-2000:])
    assert "speedup" not in out and took < 15, took  # no results table from a cut run; not every run first


def test_the_des_worker_processes_ignore_ctrl_c_for_good() -> None:
    """Their parent stops them (`stopped_on_interrupt`): a worker that heard Ctrl-C itself while starting up
    printed a traceback over the terminal (the nineteenth review)."""
    from loadtests.bench.des import worker_pool

    pool = worker_pool(2, 2)
    assert pool is not None
    try:
        assert pool.submit(sum, [1, 2]).result(timeout=60) == 3
        for pid in list(getattr(pool, "_processes", {})):
            status = Path(f"/proc/{pid}/status").read_text()
            ignored = int(next(ln for ln in status.splitlines() if ln.startswith("SigIgn:")).split()[1], 16)
            assert ignored & (1 << (signal.SIGINT - 1)), pid
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # this process's is back
    finally:
        pool.shutdown()
