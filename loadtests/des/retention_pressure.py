"""Retention contract v2 under KV pressure: `continuum-ttl` against `session-affinity` in the DES cluster.

Usage: `python3 -m loadtests.des.retention_pressure [--tasks 120] [--replicas 4] [--concurrency 48]
[--kv-scales 1,0.5,0.25] [--profile llama3-8b-h100] [--seed 0]` prints one markdown table.

Contract: every row runs the same seeded swe tasks on a fresh cluster whose engines have the profile's KV
capacity scaled by the row's factor (as vLLM's `--num-gpu-blocks-override`); the contenders are
`session-affinity`, `continuum-ttl` (retention under contract v2, every priority equal) and the same
retention with v1's rule re-created by giving every retention the least important priority (any waiting
request may then break it, oldest first, which is exactly contract v1). Deterministic for a seed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import msgspec

from loadtests.des.cluster import run_cluster
from loadtests.des.result import ClusterResult
from loadtests.workloads.swe import swe_tasks
from proxy.scheduler import PRESETS, PolicySpec
from proxy.scheduler.registry import PluginSpec
from simulator.cost_model import get_profile

LEAST_IMPORTANT = 2**31 - 1


def v1_equivalent(ttl_s: float = 10.0) -> PolicySpec:
    """continuum-ttl whose retentions every request may break: contract v1's behaviour under v2."""
    spec = PRESETS["continuum-ttl"]
    retention = PluginSpec("fixed-ttl-retention", params={"ttl_s": ttl_s, "priority": LEAST_IMPORTANT})
    return msgspec.structs.replace(spec, retention=retention)


def contenders() -> dict[str, str | PolicySpec]:
    return {
        "session-affinity": "session-affinity",
        "continuum-ttl (v2)": "continuum-ttl",
        "continuum-ttl (v1 rule)": v1_equivalent(),
    }


def row(name: str, scale: float, result: ClusterResult) -> str:
    s = result.summary()
    replicas = result.replicas
    preemptions = sum(r.preemptions for r in replicas)
    dropped = sum(r.retentions_dropped for r in replicas)
    return (
        f"| {scale:g} | {name} | {s.tct_mean_s:.1f} | {s.tct_p50_s:.1f} | {s.tct_p90_s:.1f} | "
        f"{s.prefix_hit_rate:.1%} | {preemptions} | {dropped} | {s.failed} |"
    )


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=120)
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=48)
    p.add_argument("--kv-scales", default="1,0.5,0.25")
    p.add_argument("--profile", default="llama3-8b-h100")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    base = get_profile(args.profile)
    tasks = swe_tasks(args.tasks, seed=args.seed)
    print(
        "| KV scale | policy | TCT mean s | TCT p50 s | TCT p90 s | prefix hit | preemptions "
        "| retentions dropped | failed |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for scale in (float(x) for x in args.kv_scales.split(",")):
        capacity = int(base.kv_capacity_tokens * scale) // base.block_size * base.block_size
        profile = msgspec.structs.replace(base, kv_capacity_tokens=capacity)
        for name, policy in contenders().items():
            result = run_cluster(
                tasks,
                replicas=args.replicas,
                profile=profile,
                policy=policy,
                seed=args.seed,
                concurrency=args.concurrency,
            )
            print(row(name, scale, result), flush=True)


if __name__ == "__main__":
    main()
