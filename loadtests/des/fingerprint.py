"""`python -m loadtests.des.fingerprint`: run a fixed set of seeded discrete-event cluster configurations and
print one SHA-256 of each `ClusterResult` (msgspec JSON: every task, call and replica counter, the event
count, floats exactly), so two versions of the engine or cluster can be shown to give bit-identical results.

Compare the checkout with another tree (e.g. main's, unpacked with `git archive`):
    PYTHONPATH=$PWD python -m loadtests.des.fingerprint > mine.txt
    PYTHONPATH=/tmp/main python /path/to/this/file > main.txt && diff mine.txt main.txt
(run as a file, it imports the cluster from whatever PYTHONPATH holds). `--only NAME` runs one case.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable, Sequence

import msgspec

from loadtests.des.cluster import Cluster
from loadtests.des.result import ClusterConfig
from loadtests.tasks import AgentTask
from loadtests.workloads.distributions import LogNormal, ToolKind
from loadtests.workloads.swe import SweParams, swe_tasks
from loadtests.workloads.webarena import webarena_tasks

# Short coding agents (~10k tokens) on replicas with 16k tokens of KV: preemptions, retentions under pressure.
SHORT_SWE = SweParams(
    calls_per_task=LogNormal(6, 10, cap=10),
    max_context_tokens=10_000,
    tools=[ToolKind("bash", 1.0, LogNormal(0.3, 0.6))],
)


def tight_config(**options: object) -> ClusterConfig:
    """Two replicas of 16k KV tokens each (also the coalescing equality tests' setup)."""
    profile = msgspec.structs.replace(
        ClusterConfig().resolved_profile(), kv_capacity_tokens=16_384, max_model_len=16_384
    )
    return ClusterConfig(replicas=2, profile=profile, **options)  # type: ignore[arg-type]


Case = tuple[Callable[[], list[AgentTask]], ClusterConfig]

CASES: dict[str, Case] = {
    "tight-continuum-open": (
        lambda: swe_tasks(20, seed=3, params=SHORT_SWE),
        tight_config(policy="continuum-ttl", arrival_rate=1.0, seed=3),
    ),
    "tight-affinity-closed-mixed": (
        lambda: swe_tasks(8, seed=5, params=SHORT_SWE) + webarena_tasks(6, seed=5),
        tight_config(policy="session-affinity", concurrency=9, seed=5),
    ),
    "tight-affinity-offload": (
        lambda: swe_tasks(20, seed=5, params=SHORT_SWE),
        tight_config(policy="session-affinity", arrival_rate=1.0, seed=5, kv_offload_gib=1.0),
    ),
    "tight-round-robin-step-by-step": (
        lambda: swe_tasks(16, seed=7, params=SHORT_SWE),
        tight_config(policy="round-robin", concurrency=12, seed=7, coalesce_decode=False),
    ),
    "swe-affinity": (
        lambda: swe_tasks(48, seed=0),
        ClusterConfig(replicas=4, policy="session-affinity", concurrency=32, seed=0),
    ),
    "swe-affinity-kv-short": (
        lambda: swe_tasks(40, seed=1),
        ClusterConfig(replicas=4, policy="session-affinity", concurrency=32, seed=1, kv_scale=0.25),
    ),
    "swe-continuum-kv-short-offload": (
        lambda: swe_tasks(40, seed=2),
        ClusterConfig(
            replicas=4, policy="continuum-ttl", concurrency=32, seed=2, kv_scale=0.25, kv_offload_gib=8.0
        ),
    ),
    # SAGA's policy: admission, workflow-age priorities, predicted retentions ranked by priority, stealing
    "tight-saga-open": (
        lambda: swe_tasks(20, seed=6, params=SHORT_SWE),
        tight_config(policy="saga", arrival_rate=1.0, seed=6),
    ),
    "swe-saga-kv-short": (
        lambda: swe_tasks(40, seed=8),
        ClusterConfig(replicas=4, policy="saga", concurrency=32, seed=8, kv_scale=0.25),
    ),
    "webarena-round-robin": (
        lambda: webarena_tasks(60, seed=4),
        ClusterConfig(replicas=3, policy="round-robin", concurrency=40, seed=4, kv_scale=0.2),
    ),
}


def fingerprint(name: str) -> tuple[str, float]:
    """The SHA-256 of case `name`'s result, and the wall seconds it took."""
    make_tasks, config = CASES[name]
    tasks = make_tasks()
    started = time.perf_counter()
    result = Cluster(tasks, config).run()
    wall = time.perf_counter() - started
    return hashlib.sha256(msgspec.json.encode(result)).hexdigest(), wall


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.des.fingerprint", description=__doc__.split("\n")[0]
    )
    p.add_argument("--only", action="append", choices=sorted(CASES), help="run only these cases")
    p.add_argument("--wall", action="store_true", help="print each case's wall time too")
    args = p.parse_args(argv)
    for name in args.only or CASES:
        digest, wall = fingerprint(name)
        print(f"{name:<34} {digest}" + (f"  {wall:6.1f} s" if args.wall else ""), flush=True)


if __name__ == "__main__":
    main()
