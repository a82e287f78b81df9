"""A clairvoyant reference for `saga`'s order (an experiment, not a policy): what knowing each task's length
would be worth at the declared point.

`saga` orders work by what it can know: waiting workflows by arrival + their agent type's expected service,
and vLLM priorities by workflow age. Here an oracle replaces both with each task's true isolated time
(admission: arrival + isolated time; priority: the same deadline, or one of the non-clairvoyant keys below),
on the same tasks and arrivals as `saga bench des --seed S`. Run pure Python (the compiled scheduler core's
methods cannot be replaced):

    SAGA_PURE_PYTHON=1 python3 docs/results/saga-v3/oracle_order.py WORKLOAD KV_SCALE RATE SEED MODE...

MODE: `saga` (unchanged), `oracle-admission`, `oracle-priority`, `oracle-both`, `least-attained` (priority
to workflows with fewer calls done), `most-attained` (more calls done first). 160 tasks on 16 x
llama3-70b-tp4-a100.
"""

from __future__ import annotations

import math
import sys
from concurrent.futures import ProcessPoolExecutor

import predictor.predictor as predictor_module
import proxy.scheduler.core as core_module
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.des.cluster import run_cluster
from loadtests.workloads.catalog import generate, with_poisson_arrivals
from simulator.cost_model import PROFILES

PROFILE = "llama3-70b-tp4-a100"


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(max(x, 1e-9)) for x in xs) / len(xs))


def run(args: tuple[str, float, float, int, str]) -> str:
    workload, kv_scale, rate, seed, mode = args
    tasks = with_poisson_arrivals(generate(workload, 160, seed=seed), rate, seed=seed)
    isolated = {t.session_id: isolated_task_time_s(t, PROFILES[PROFILE]) for t in tasks}
    deadline = {t.session_id: (t.arrival_s or 0.0) + isolated[t.session_id] for t in tasks}
    core = core_module.SchedulerCore
    if mode in ("oracle-admission", "oracle-both"):
        predictor_module.Predictor.expected_work_s = lambda self, sid: isolated.get(sid)  # type: ignore[method-assign]
    if mode in ("oracle-priority", "oracle-both"):
        own = core._priority

        def by_deadline(self: core_module.SchedulerCore, session: object) -> int | None:
            sid = next((k for k, v in self.sessions.items() if v is session), None)
            return int(deadline[sid] * 1000) if sid in deadline else own(self, session)  # type: ignore[arg-type]

        core._priority = by_deadline  # type: ignore[method-assign,assignment]
    if mode in ("least-attained", "most-attained"):
        sign = 1 if mode == "least-attained" else -1
        core._priority = lambda self, s: sign * s.calls * 10**7 + s.seq  # type: ignore[method-assign,assignment]
    result = run_cluster(tasks, replicas=16, profile=PROFILE, policy="saga", seed=seed, kv_scale=kv_scale)
    tct = [r.finished_s - r.started_s for r in result.tasks]
    alone = _geomean(list(isolated.values()))
    return f"{workload} seed {seed} {mode:17s} TCT geomean {_geomean(tct):7.1f} s (isolated {alone:6.1f} s)"


if __name__ == "__main__":
    workload, kv_scale, rate, seed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    with ProcessPoolExecutor(2) as pool:
        for line in pool.map(run, [(workload, kv_scale, rate, seed, mode) for mode in sys.argv[5:]]):
            print(line, flush=True)
