"""`python -m loadtests.bench.load_sync_cost`: the CPU one sync period of `saga serve --workers N` costs a
worker (proxy/load_sync.py: publish its own load per replica, read and sum the other workers', tell the core
what changed), at 64 replicas by default.

The other workers are simulated by tables written in this process (fresh heartbeats); "steady" periods find
the others' figures unchanged, "changing" ones find every replica's changed (each one a `foreign_load`).
Prints the per-period CPU time (thread CPU clock) as mean, p50 and p99 in µs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from proxy.arg_types import at_least
from proxy.load_sync import LoadSync
from proxy.scheduler import ReplicaStats, RequestInfo, SchedulerCore, build_policy
from proxy.shared_load import LoadTable, replica_key


def measure(replicas: int, workers: int, periods: int, changing: bool) -> list[float]:
    ids = [f"http://replica-{i}:8000" for i in range(replicas)]
    core = SchedulerCore(ids, build_policy("saga", seed=0), time.monotonic)
    for rid in ids:
        core.replica_stats(ReplicaStats(rid, kv_capacity_tokens=1_000_000))
    for i in range(4 * replicas):  # some of this worker's own load on every replica
        core.request_arrived(RequestInfo(f"q{i}", f"s{i}", 0.0, prompt_tokens=8_000))
    keys = [replica_key(r) for r in ids]
    with tempfile.TemporaryDirectory(prefix="saga-") as directory:
        others = [LoadTable(directory, workers, i) for i in range(1, workers)]
        sync = LoadSync(core, LoadTable(directory, workers, 0))
        samples = []
        for period in range(periods):
            now = time.monotonic_ns()
            n = period if changing else 1
            for table in others:
                table.publish([(k, 10_000 * (n % 7), n % 5, 0, 0) for k in keys], now)
            start = time.thread_time_ns()
            sync.step(now)
            samples.append((time.thread_time_ns() - start) / 1_000)
        for table in [*others, sync.table]:
            table.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=at_least(1), default=64)
    parser.add_argument("--workers", type=at_least(1), default=4)
    parser.add_argument("--periods", type=at_least(1), default=5_000)
    args = parser.parse_args()
    for changing in (False, True):
        samples = sorted(measure(args.replicas, args.workers, args.periods, changing))
        p99 = samples[int(0.99 * (len(samples) - 1))]
        print(
            f"{'changing' if changing else 'steady':8} {args.replicas} replicas, {args.workers} workers: "
            f"mean {statistics.fmean(samples):.1f} µs, p50 {statistics.median(samples):.1f} µs, "
            f"p99 {p99:.1f} µs per period"
        )


if __name__ == "__main__":
    main()
