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
