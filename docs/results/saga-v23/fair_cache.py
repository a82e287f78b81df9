"""Where the two tenants' call time goes in the fairness bench's heavier flood under `saga` with AFS (an
experiment): per tenant, the later calls' prefix-cache hits, and the mean wait to be scheduled, time to
first token and latency of a call.

    python3 docs/results/saga-v23/fair_cache.py [--kv-scale F] [--seed S]
"""

from __future__ import annotations

import argparse
import sys

from loadtests.bench import fairness
from loadtests.des.cluster import Cluster
from simulator.cost_model import get_profile

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    fairness.add_fairness_parser(parser.add_subparsers(dest="mode"))
    flood = ["--policy", "saga", "--interactive-tasks", "150", "--batch-tasks", "800", "--max-in-flight", "6"]
    args = parser.parse_args(["fairness", *flood, *sys.argv[1:]])
    profile = get_profile(args.profile)
    tenants = fairness.tenants_config(args.interactive_weight, args.batch_weight, args.slo_factor)
    tasks = fairness.make_tasks(args)
    result = Cluster(tasks, fairness.cluster_config("afs", args, profile, tenants)).run()
    for tenant in (fairness.INTERACTIVE, fairness.BATCH):
        records = [r for r in result.tasks if r.tenant_id == tenant]
        every_call = [c for r in records for c in r.calls]
        calls = [c for c in every_call if c.error is None]
        failed_tasks = sum(r.failed for r in records)
        print(f"{tenant}: {len(records)} tasks, {failed_tasks} failed; {len(every_call)} calls, ", end="")
        print(f"{len(every_call) - len(calls)} failed (the figures below are the answered calls')")
        later = [c for c in calls if c.step > 0]
        hit = sum(c.cached_tokens for c in later) / max(1, sum(c.prompt_tokens for c in later))
        queue = sum(c.queue_s or 0.0 for c in calls) / len(calls)
        ttft = sum(c.ttft_s or 0.0 for c in calls) / len(calls)
        latency = sum(c.latency_s for c in calls) / len(calls)
        print(f"{tenant}: later calls' cache hits {hit:.1%}; mean wait to be scheduled {queue:.2f} s,")
        print(f"  first token {ttft:.2f} s, latency {latency:.2f} s")
