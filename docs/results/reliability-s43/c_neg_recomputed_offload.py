# ruff: noqa
"""ReplicaCounters.recomputed_prefill_tokens ("prefill computed again because the request was preempted")
goes negative with a CPU KV offload tier: a preempted request reloaded from CPU computes less than
prompt - cached_tokens (cached counts only its first admission), so prefill - first_prefill < 0."""

import os, sys

ROOT = os.environ.get(
    "SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
)
sys.path.insert(0, ROOT)
from loadtests.des.cluster import run_cluster
from loadtests.workloads.catalog import generate

tasks = generate("swe", 16, seed=0)
r = run_cluster(
    tasks, replicas=2, policy="session-affinity", seed=0, concurrency=8, kv_scale=0.25, kv_offload_gib=16.0
)
vals = {x.replica_id: x.recomputed_prefill_tokens for x in r.replicas}
if min(vals.values()) < 0:
    print(
        f"DEFECT: negative recomputed_prefill_tokens with CPU offload: {vals} (preemptions {[x.preemptions for x in r.replicas]})"
    )
else:
    print(f"OK: recomputed_prefill_tokens non-negative: {vals}")
