"""CPU time of a new workflow's first call (admission, placement over every replica, dispatch) on the state
`saga bench core --new-workflows 0.02` leaves (64 replicas, 10,000 sessions, 5,000 timed calls), in a hot
loop of 300 new workflows, each finished before the next (round 7 of docs/results/core-cost.md).

Run from the repository root: `python3 docs/results/core-cost-tools/new_workflow_arrival.py`.
"""

import time

import proxy.scheduler.core as core_mod
from loadtests.bench import core as bench
from proxy.scheduler import RequestInfo, Usage

cores = []


class Core(core_mod.SchedulerCore):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        cores.append(self)


bench.SchedulerCore = Core
bench.bench_core(
    "saga",
    queue=False,
    replicas=64,
    sessions=10000,
    calls=5000,
    warmup=10000,
    in_flight=256,
    new_workflows=0.02,
)
core = cores[0]
table = bench._Sessions(100, 0)
costs = []
for i in range(300):
    r = table.request(10**6 + i, i % 100, 0.0)
    req = RequestInfo(
        request_id=r.request_id,
        session_id="new" + r.request_id,
        arrived_at=0.0,
        agent_type=r.agent_type,
        prompt_tokens=r.prompt_tokens,
        prefix_hashes=r.prefix_hashes,
    )
    t0 = time.thread_time_ns()
    core.request_arrived(req)
    costs.append(time.thread_time_ns() - t0)
    core.first_token(req.request_id)
    core.request_finished(req.request_id, Usage(req.prompt_tokens, 200, 0, "tool_calls"))
costs.sort()
print(f"new-workflow arrival, hot loop: p50 {costs[150] / 1000:.1f} µs, p90 {costs[270] / 1000:.1f} µs")
