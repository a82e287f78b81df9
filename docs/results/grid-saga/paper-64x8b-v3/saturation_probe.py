"""session-affinity's closed-loop throughput with N tasks offered at once at the full KV: one step of
`saga bench grid`'s saturation search (loadtests/bench/grid_runs.py `saturation_search`), at a population of
your choice.

    PYTHONPATH=. python docs/results/grid-saga/paper-64x8b-v3/saturation_probe.py WORKLOAD N
    PROF=llama3-70b-tp4-a100 REPL=16 PYTHONPATH=. python ... WORKLOAD N   # another fleet
"""

from __future__ import annotations

import os
import sys
import time

from loadtests.bench.grid_runs import run_one
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.workloads.catalog import generate
from simulator.cost_model import get_profile

workload, n = sys.argv[1], int(sys.argv[2])
profile = os.environ.get("PROF", "llama3-8b-h100")
replicas = int(os.environ.get("REPL", "64"))
tasks = generate(workload, n, seed=0)
isolated = {t.session_id: isolated_task_time_s(t, get_profile(profile)) for t in tasks}
started = time.perf_counter()
run = run_one(
    "session-affinity",
    tasks,
    rate=None,
    kv_scale=1.0,
    replicas=replicas,
    profile=profile,
    seed=0,
    isolated=isolated,
)
wall = time.perf_counter() - started
rate = run.metrics.throughput_tasks_per_s
print(f"{replicas} x {profile} {workload} {n}: {rate:.4f} tasks/s (wall {wall:.0f} s)")
