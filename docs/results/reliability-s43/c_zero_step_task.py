# ruff: noqa
"""run_cluster promises ValueError on a bad configuration before anything runs (AgentTask.validate is
called for every task), but a task with no steps passes validation and crashes mid-run with IndexError."""

import os, sys

ROOT = os.environ.get(
    "SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
)
sys.path.insert(0, ROOT)
from loadtests.des.cluster import run_cluster
from loadtests.tasks import AgentTask, Step

tasks = [AgentTask("ok", 300, 200, [Step(20, "bash", 0.0, 100)]), AgentTask("empty", 300, 200, [])]
try:
    r = run_cluster(tasks, replicas=1, profile="tiny-cpu", policy="saga")
    print(f"OK: zero-step task handled: {r.summary().tasks} tasks, {r.summary().failed} failed")
except ValueError as e:
    print(f"OK: zero-step task refused up front: {e}")
except Exception as e:
    print(
        f"DEFECT: a zero-step task passes AgentTask.validate and crashes run_cluster: {type(e).__name__}: {e}"
    )
