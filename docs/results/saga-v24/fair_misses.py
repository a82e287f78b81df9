"""Which interactive tasks miss their SLO under the fairness bench's heavier flood, and where their time went
(an experiment): per missed task, its isolated time, completion time, and per call the wait to be scheduled,
first token, latency, cache hit and replica; and, for each call, how many calls the replica held then.

    SAGA_PURE_PYTHON=1 python3 docs/results/saga-v24/fair_misses.py [--policy P] [--seed S] [--kv-scale F]

(pure Python: a compiled cluster cannot be subclassed, and this one records when each call is dispatched).
"""

from __future__ import annotations

import argparse
import sys

from loadtests.bench import fairness
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.des.client import PendingCall
from loadtests.des.cluster import Cluster
from proxy.scheduler import Dispatch
from simulator.cost_model import get_profile

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    fairness.add_fairness_parser(parser.add_subparsers(dest="mode"))
    flood = ["--interactive-tasks", "150", "--batch-tasks", "800", "--max-in-flight", "6"]
    args = parser.parse_args(["fairness", *flood, *sys.argv[1:]])
    profile = get_profile(args.profile)
    tenants = fairness.tenants_config(args.interactive_weight, args.batch_weight, args.slo_factor)
    tasks = fairness.make_tasks(args)
    isolated = {t.session_id: isolated_task_time_s(t, profile) for t in tasks}
    sent_at: dict[str, float] = {}  # request id -> when the proxy dispatched it to a replica

    class Recording(Cluster):
        def _dispatch(self, call: PendingCall, decision: Dispatch) -> None:
            sent_at[call.info.request_id] = self.queue.now
            super()._dispatch(call, decision)

    result = Recording(tasks, fairness.cluster_config("afs", args, profile, tenants)).run()
    every_call = [(r, c) for r in result.tasks for c in r.calls]

    def held(replica: str, at: float) -> tuple[int, int]:
        """Calls in flight on `replica` at `at`: (interactive, batch)."""
        inter = batch = 0
        for r, c in every_call:
            if c.replica == replica and c.started_s <= at < c.started_s + c.latency_s:
                if r.tenant_id == fairness.INTERACTIVE:
                    inter += 1
                else:
                    batch += 1
        return inter, batch

    inter = [r for r in result.tasks if r.tenant_id == fairness.INTERACTIVE]
    slow = sorted(inter, key=lambda r: r.completion_time_s / isolated[r.session_id], reverse=True)
    met = sum(r.completion_time_s <= args.slo_factor * isolated[r.session_id] for r in inter)
    print(f"{args.policy} seed {args.seed}: {met}/{len(inter)} met")
    for r in slow[:4]:
        iso = isolated[r.session_id]
        print(
            f"{r.session_id}: {len(r.calls)} calls, isolated {iso:.1f} s, took {r.completion_time_s:.1f} s "
            f"({r.completion_time_s / iso:.2f}x), started {r.started_s:.0f}"
        )
        for c in r.calls:
            hit = c.cached_tokens / max(1, c.prompt_tokens)
            i, b = held(c.replica, c.started_s)
            proxy_wait = sent_at[f"{r.session_id}/{c.step}"] - c.started_s
            print(
                f"  step {c.step}: at {c.started_s - r.started_s:6.1f} wait {c.queue_s or 0:5.2f} "
                f"(proxy {proxy_wait:5.2f}) "
                f"ttft {c.ttft_s or 0:5.2f} lat {c.latency_s:5.2f} prompt {c.prompt_tokens:6d} "
                f"hit {hit:4.0%} out {c.completion_tokens:4d} on {c.replica} holding {i} int / {b} batch"
            )
